/**
 * The signed-in user's notifications: the unread count for the bell, and the latest ones for the panel.
 * Live: `notification:new` adds one (and counts it), `notification:read` (sent when any of the user's tabs
 * marks something read) updates the count and the item.
 */
import { get, writable, type Readable } from "svelte/store";

import type { ApiClient, Page } from "./api";
import type { LiveConnection } from "./live";

export interface Notification {
  id: string;
  kind: string;
  payload: Record<string, unknown>;
  created_at: string;
  read_at: string | null;
}

export class NotificationsStore {
  private readonly unreadStore = writable(0);
  private readonly itemsStore = writable<Notification[]>([]);
  private stops: (() => void)[] = [];

  constructor(
    private readonly api: ApiClient,
    private readonly live: LiveConnection,
    private readonly pageSize = 20,
  ) {}

  get unread(): Readable<number> {
    return this.unreadStore;
  }

  get items(): Readable<Notification[]> {
    return this.itemsStore;
  }

  /** Subscribes to the live events and loads the count; call once signed in. */
  async start(): Promise<void> {
    this.stop();
    this.stops.push(
      this.live.on<Notification>("notification:new", (n) => {
        if (get(this.itemsStore).some((item) => item.id === n.id)) return;
        this.itemsStore.update((items) => [n, ...items]);
        if (n.read_at === null) this.unreadStore.update((count) => count + 1);
      }),
      this.live.on<{ notification_id: string | null; unread: number | null }>("notification:read", (event) => {
        if (typeof event.unread === "number") this.unreadStore.set(event.unread);
        const now = new Date().toISOString();
        this.itemsStore.update((items) =>
          items.map((item) =>
            item.read_at === null && (event.notification_id === null || item.id === event.notification_id)
              ? { ...item, read_at: now }
              : item,
          ),
        );
      }),
      // Anything that arrived while disconnected: count it again.
      this.live.onConnect((reconnect) => {
        if (reconnect) void this.refreshCount().catch(() => {});
      }),
    );
    await this.refreshCount();
  }

  stop(): void {
    for (const stop of this.stops) stop();
    this.stops = [];
    this.unreadStore.set(0);
    this.itemsStore.set([]);
  }

  async refreshCount(): Promise<void> {
    const { unread } = await this.api.get<{ unread: number }>("/me/notifications/unread-count");
    this.unreadStore.set(unread);
  }

  /** The latest notifications (for the panel). */
  async load(): Promise<void> {
    const page = await this.api.get<Page<Notification>>("/me/notifications", { limit: this.pageSize });
    this.itemsStore.set(page.items);
    await this.refreshCount();
  }

  async markRead(id: string): Promise<void> {
    const updated = await this.api.post<Notification>(`/notifications/${encodeURIComponent(id)}/read`);
    this.itemsStore.update((items) => items.map((item) => (item.id === id ? updated : item)));
    await this.refreshCount();
  }

  async markAllRead(): Promise<void> {
    await this.api.post<{ marked: number }>("/me/notifications/read-all");
    const now = new Date().toISOString();
    this.itemsStore.update((items) => items.map((item) => (item.read_at ? item : { ...item, read_at: now })));
    this.unreadStore.set(0);
  }
}

/** One line a person can read for a notification (kinds the app does not know yet get a generic line). */
export function describe(n: Notification): string {
  const p = n.payload;
  const text = (key: string): string => (typeof p[key] === "string" ? (p[key] as string) : "");
  switch (n.kind) {
    case "role_changed":
      return `Your role is now ${text("role")}.`;
    case "community_added":
      return `You were added to the community ${text("community_name") || "a community"}.`;
    case "community_removed":
      return `You were removed from the community ${text("community_name") || "a community"}.`;
    case "community_role_changed":
      return `Your role in ${text("community_name") || "a community"} is now ${text("role")}.`;
    case "chat_mention": {
      const by = p["by"] as { display_name?: unknown } | undefined;
      const who = typeof by?.display_name === "string" ? by.display_name : "Someone";
      return `${who} mentioned you: “${text("excerpt")}”`;
    }
    case "live_session_scheduled":
      return `Live session scheduled: ${text("title")}, ${new Date(text("starts_at")).toLocaleString()}.`;
    case "live_session_starting":
      return `Live session starting soon: ${text("title")}.`;
    case "live_session_cancelled":
      return `Live session cancelled: ${text("title")}.`;
    case "dm_started": {
      const by = p["by"] as { display_name?: unknown } | undefined;
      const who = typeof by?.display_name === "string" ? by.display_name : "Someone";
      return `${who} started a conversation with you.`;
    }
    case "forum_mention":
    case "forum_reply": {
      const by = p["by"] as { display_name?: unknown } | undefined;
      const who = typeof by?.display_name === "string" ? by.display_name : "Someone";
      const what = n.kind === "forum_reply" ? "replied to you" : "mentioned you";
      return `${who} ${what} in “${text("title")}”: “${text("excerpt")}”`;
    }
    case "room_role_changed":
      return `Your role in the room ${text("room_name") || "a room"} is now ${text("role")}.`;
    case "teacher_application":
      return `${text("display_name") || "Someone"} applied to teach.`;
    case "teacher_application_decided": {
      const note = text("note");
      const verdict = text("state") === "approved" ? "approved: you can now teach" : "turned down";
      return `Your application to teach was ${verdict}.` + (note ? ` “${note}”` : "");
    }
    default:
      return n.kind.replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase()) + ".";
  }
}
