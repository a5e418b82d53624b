/**
 * The Yjs provider helper for a workspace's document (`/yjs/{workspace_id}`), over the official `yjs` and
 * `y-websocket`. Imported only by the workspace screens, so the editor's code loads on demand.
 *
 * Every connect needs a fresh one-use ticket (`POST /api/v1/auth/ws-ticket`, docs/collaborative-ide.md):
 * the provider is created with `connect: false`; each (re)connect fetches a ticket into `provider.params`
 * and then connects. When the socket closes, the provider's own retry (which would reuse the spent
 * ticket) is cancelled and we come back with a fresh ticket after a backoff. Close codes 4403/4404 mean no
 * access: no retry, `status` says why.
 */
import { writable, type Readable } from "svelte/store";
import { WebsocketProvider } from "y-websocket";
import * as Y from "yjs";

import type { ApiClient } from "./api";
import { Backoff } from "./backoff";
import { messageOf } from "./errors";

export type DocStatus =
  | { state: "connecting" | "connected" | "reconnecting" }
  | { state: "refused"; message: string };

export interface SharedDocument {
  doc: Y.Doc;
  provider: WebsocketProvider;
  /** The files of the workspace: path → Y.Text (API.md). */
  files: Y.Map<Y.Text>;
  status: Readable<DocStatus>;
  /** Whether the first sync with the server finished. */
  synced: Readable<boolean>;
  destroy(): void;
}

const REFUSED: Record<number, string> = {
  4403: "Your access to this workspace was withdrawn.",
  4404: "This workspace does not exist, or you may not see it.",
  4413: "That change would make the workspace too large, so it was refused.",
};

export function openDocument(api: ApiClient, workspaceId: string, origin = location.origin): SharedDocument {
  const doc = new Y.Doc();
  const url = origin.replace(/^http/, "ws") + "/yjs";
  const provider = new WebsocketProvider(url, workspaceId, doc, { connect: false, disableBc: true });
  const status = writable<DocStatus>({ state: "connecting" });
  const synced = writable(false);
  const backoff = new Backoff();
  let closed = false;
  let timer: ReturnType<typeof setTimeout> | null = null;
  let everConnected = false;

  const connect = async (): Promise<void> => {
    timer = null;
    // Already (being) connected: an attempt started while offline may end after another one succeeded.
    const busy = (): boolean => closed || provider.wsconnected || provider.wsconnecting;
    if (busy()) return;
    try {
      const { ticket } = await api.post<{ ticket: string }>("/auth/ws-ticket");
      if (busy()) return;
      provider.params = { ticket };
      provider.connect();
    } catch (error) {
      if (busy()) return;
      status.set({ state: "reconnecting" });
      if ((error as { status?: number }).status === 401) {
        status.set({ state: "refused", message: messageOf(error) });
        return;
      }
      timer = setTimeout(() => void connect(), backoff.next());
    }
  };

  provider.on("status", ({ status: s }) => {
    if (s === "connected") {
      everConnected = true;
      backoff.reset();
      status.set({ state: "connected" });
    }
  });
  provider.on("sync", (isSynced: boolean) => {
    synced.set(isSynced);
    // Synced with the server: connected, whatever an attempt that failed while offline said meanwhile.
    if (isSynced && provider.wsconnected) status.set({ state: "connected" });
  });
  provider.on("connection-close", (event) => {
    if (closed) return;
    // Cancel y-websocket's retry with the spent ticket (not `provider.disconnect()`: called from this
    // event, which y-websocket emits before it lets go of the socket, that would close it again and recurse).
    provider.shouldConnect = false;
    const code = event?.code ?? 0;
    const refused = REFUSED[code];
    if (refused !== undefined && code !== 4413) {
      status.set({ state: "refused", message: refused });
      return;
    }
    status.set({ state: everConnected ? "reconnecting" : "connecting" });
    if (timer === null) timer = setTimeout(() => void connect(), backoff.next());
  });
  // The browser knows the network is gone before the socket does: stop at once (edits stay in the Y.Doc) and
  // come back as soon as it is back, without waiting out the backoff.
  const offline = (): void => {
    if (closed) return;
    status.set({ state: "reconnecting" });
    provider.disconnect();
  };
  const online = (): void => {
    if (closed || provider.wsconnected) return;
    if (timer !== null) clearTimeout(timer);
    backoff.reset();
    void connect();
  };
  const browser = typeof window !== "undefined" ? window : null;
  browser?.addEventListener("offline", offline);
  browser?.addEventListener("online", online);
  void connect();

  return {
    doc,
    provider,
    files: doc.getMap<Y.Text>("files"),
    status,
    synced,
    destroy() {
      closed = true;
      browser?.removeEventListener("offline", offline);
      browser?.removeEventListener("online", online);
      if (timer !== null) clearTimeout(timer);
      provider.destroy();
      doc.destroy();
    },
  };
}
