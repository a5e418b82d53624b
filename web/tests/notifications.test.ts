import { get } from "svelte/store";
import { describe, expect, it } from "vitest";

import type { ApiClient } from "../src/lib/api";
import { LiveConnection, type SocketLike } from "../src/lib/live";
import { NotificationsStore, describe as describeNotification, type Notification } from "../src/lib/notifications";

type Handler = (data: unknown) => void;

function setUp(unread = 2) {
  const handlers = new Map<string, Handler[]>();
  const socket = {
    connected: true,
    active: true,
    on: (event: string, handler: Handler) => handlers.set(event, [...(handlers.get(event) ?? []), handler]),
    off: (event: string, handler: Handler) => handlers.set(event, (handlers.get(event) ?? []).filter((h) => h !== handler)),
    connect: () => undefined,
    disconnect: () => undefined,
    timeout: () => ({ emitWithAck: async () => ({ ok: true }) }),
    io: { on: () => undefined },
  } as unknown as SocketLike;
  const fire = (event: string, data: unknown) => (handlers.get(event) ?? []).forEach((h) => h(data));
  const calls: string[] = [];
  const api = {
    get: async (path: string) => {
      calls.push("GET " + path);
      return path.endsWith("unread-count") ? { unread } : { items: [] };
    },
    post: async (path: string) => {
      calls.push("POST " + path);
      return { marked: 0 };
    },
  } as unknown as ApiClient;
  const live = new LiveConnection({ accessToken: "a", refresh: async () => true }, () => socket);
  live.start();
  const store = new NotificationsStore(api, live);
  return { store, fire, calls };
}

const note = (id: string, kind = "role_changed", payload: Record<string, unknown> = { role: "instructor" }): Notification => ({
  id,
  kind,
  payload,
  created_at: "2026-12-02T12:00:00+00:00",
  read_at: null,
});

describe("NotificationsStore", () => {
  it("counts live notifications once each, and takes the count notification:read reports", async () => {
    const { store, fire } = setUp(2);
    await store.start();
    expect(get(store.unread)).toBe(2);
    fire("notification:new", note("n1"));
    fire("notification:new", note("n1")); // delivered twice (e.g. two nodes): counted once
    fire("notification:new", note("n2"));
    expect(get(store.unread)).toBe(4);
    expect(get(store.items).map((n) => n.id)).toEqual(["n2", "n1"]);
    fire("notification:read", { notification_id: "n2", unread: 3 });
    expect(get(store.unread)).toBe(3);
    expect(get(store.items).find((n) => n.id === "n2")?.read_at).not.toBeNull();
    fire("notification:read", { notification_id: null, unread: 0 }); // "mark all read" in another tab
    expect(get(store.items).every((n) => n.read_at !== null)).toBe(true);
  });

  it("stops listening and forgets everything on sign-out", async () => {
    const { store, fire } = setUp(1);
    await store.start();
    store.stop();
    fire("notification:new", note("n3"));
    expect(get(store.unread)).toBe(0);
    expect(get(store.items)).toEqual([]);
  });
});

describe("describe", () => {
  it("says what happened in words, and something readable for kinds it does not know", () => {
    expect(describeNotification(note("a"))).toBe("Your role is now instructor.");
    expect(describeNotification(note("b", "chat_mention", { by: { display_name: "Ada" }, excerpt: "@bo look" }))).toBe(
      "Ada mentioned you: “@bo look”",
    );
    expect(describeNotification(note("d", "dm_started", { by: { display_name: "Bo" }, room_id: "r" }))).toBe(
      "Bo started a conversation with you.",
    );
    expect(
      describeNotification(note("e", "forum_reply", { by: { display_name: "Hal" }, title: "Loops", excerpt: "a base case" })),
    ).toBe("Hal replied to you in “Loops”: “a base case”");
    expect(describeNotification(note("c", "contest_invitation", {}))).toBe("Contest invitation.");
  });
});
