/**
 * The Socket.IO connection: one per signed-in tab, over the official `socket.io-client`.
 *
 * socket.io-client reconnects by itself after a dropped connection; this module adds what studyhall needs:
 * - the handshake sends the *current* access token (`auth` is a function, read at every (re)connect);
 * - a connect refused as `unauthorized` (the access token expired while disconnected) refreshes the token
 *   once through the REST client and connects again; a second refusal ends the session;
 * - a `state` store for the "Reconnecting…" banner: `connecting` (first attempt), `connected`,
 *   `reconnecting` (was connected, or is retrying), `closed` (signed out / stopped);
 * - reconnects paced with jittered exponential backoff (`RECONNECT`), so a node's clients do not all come back
 *   at once when it goes down;
 * - `on(event, handler)` subscriptions that survive reconnects, and `onConnect` hooks a screen uses to
 *   join its room again and fetch what it missed (`room:join_many` with `after_seq`, see `rejoin.ts`).
 */
import { io, type ManagerOptions, type Socket, type SocketOptions } from "socket.io-client";
import { writable, type Readable } from "svelte/store";

import { Backoff } from "./backoff";
import { ApiError } from "./errors";

export type ConnectionState = "closed" | "connecting" | "connected" | "reconnecting";

/** What this module uses of a socket.io-client `Socket` (tests pass a stand-in). */
export interface SocketLike {
  readonly connected: boolean;
  readonly active: boolean;
  on(event: string, handler: (...args: never[]) => void): unknown;
  off(event: string, handler?: (...args: never[]) => void): unknown;
  connect(): unknown;
  disconnect(): unknown;
  timeout(ms: number): { emitWithAck(event: string, ...args: unknown[]): Promise<unknown> };
  io: { on(event: string, handler: (...args: never[]) => void): unknown };
}

export type SocketFactory = (options: Partial<ManagerOptions & SocketOptions>) => SocketLike;

/** What the REST client lends this module: the current token, and one refresh. */
export interface TokenSource {
  readonly accessToken: string | null;
  refresh(stale: string | null): Promise<boolean>;
}

export interface Ack {
  ok: boolean;
  error?: { code: string; message: string };
  [key: string]: unknown;
}

/**
 * Reconnect pacing, so that the clients of a node that went down do not all come back in the same instant
 * (a reconnect storm): socket.io-client's exponential backoff (the delay doubles per failed attempt, from
 * `reconnectionDelay` up to `reconnectionDelayMax`), each delay randomised by ±`randomizationFactor`; the
 * first attempt after a drop lands anywhere between 0.1 and 1.9 s.
 */
export const RECONNECT = { reconnectionDelay: 1000, reconnectionDelayMax: 10_000, randomizationFactor: 0.9 } as const;
/** The same pacing when the server closed the session itself (socket.io-client does not retry then). */
const SERVER_DISCONNECT_BASE_MS = 1000;

const defaultFactory: SocketFactory = (options) => io(options) as Socket as unknown as SocketLike;

export class LiveConnection {
  private socket: SocketLike | null = null;
  private everConnected = false;
  private refreshedSince = false;
  private sentToken: string | null = null;
  private readonly stateStore = writable<ConnectionState>("closed");
  private readonly handlers = new Map<string, Set<(data: never) => void>>();
  private readonly connectHooks = new Set<(reconnect: boolean) => void>();
  private readonly serverBackoff: Backoff;

  constructor(
    private readonly tokens: TokenSource,
    private readonly factory: SocketFactory = defaultFactory,
    /** How long an emit waits for its ack. */
    private readonly ackTimeoutMs = 10_000,
    random: () => number = Math.random,
  ) {
    this.serverBackoff = new Backoff(SERVER_DISCONNECT_BASE_MS, RECONNECT.reconnectionDelayMax, random);
  }

  get state(): Readable<ConnectionState> {
    return this.stateStore;
  }

  /** Whether the connection is up right now. */
  get connected(): boolean {
    return this.socket?.connected ?? false;
  }

  /**
   * Opens the connection (no-op when open); call once signed in, or with `tokenReady` while the access token is
   * still being fetched: the websocket then opens meanwhile, and the handshake sends the token once it settles
   * (a page load's refresh and websocket connect overlap instead of following each other).
   */
  start(tokenReady?: Promise<unknown>): void {
    if (this.socket !== null) return;
    this.everConnected = false;
    this.refreshedSince = false;
    this.stateStore.set("connecting");
    let ready = tokenReady;
    const socket = this.factory({
      auth: (cb: (data: object) => void) => {
        const send = (): void => {
          this.sentToken = this.tokens.accessToken;
          cb({ token: this.sentToken });
        };
        if (ready === undefined) return send();
        void ready.then(send, send); // a failed restore stops the connection (session.ts) or is refused
        ready = undefined; // reconnects send the token they have
      },
      ...RECONNECT,
      // Straight to a websocket (one round trip instead of the polling handshake first); polling is still
      // tried when a websocket cannot be opened (a proxy that refuses upgrades).
      transports: ["websocket", "polling"],
      tryAllTransports: true,
    });
    this.socket = socket;
    socket.on("connect", () => this.handleConnect(socket));
    socket.on("disconnect", (reason: string) => this.handleDisconnect(socket, reason));
    socket.on("connect_error", (error: Error & { data?: { code?: string } }) => void this.handleConnectError(socket, error));
    socket.io.on("reconnect_attempt", () => {
      if (this.socket === socket) this.stateStore.set(this.everConnected ? "reconnecting" : "connecting");
    });
    for (const [event, set] of this.handlers) for (const handler of set) socket.on(event, handler);
  }

  /** Closes the connection for good (sign out). */
  stop(): void {
    const socket = this.socket;
    this.socket = null;
    this.stateStore.set("closed");
    socket?.disconnect();
  }

  /** Subscribes to a server event across reconnects; returns an unsubscribe. */
  on<T>(event: string, handler: (data: T) => void): () => void {
    const typed = handler as (data: never) => void;
    let set = this.handlers.get(event);
    if (!set) this.handlers.set(event, (set = new Set()));
    set.add(typed);
    this.socket?.on(event, typed);
    return () => {
      set.delete(typed);
      this.socket?.off(event, typed);
    };
  }

  /** Runs `hook(reconnect)` at every connect (re-join rooms, fetch what was missed); returns an unsubscribe. */
  onConnect(hook: (reconnect: boolean) => void): () => void {
    this.connectHooks.add(hook);
    return () => this.connectHooks.delete(hook);
  }

  /** Emits with an ack; resolves the `{ok: true, ...}` answer, rejects an `ApiError` for anything else. */
  async emit<T extends Ack = Ack>(event: string, data: unknown): Promise<T> {
    const socket = this.socket;
    if (socket === null || !socket.connected) {
      throw new ApiError(0, "unavailable", "Not connected to the server right now; try again in a moment.");
    }
    let answer: unknown;
    try {
      answer = await socket.timeout(this.ackTimeoutMs).emitWithAck(event, data);
    } catch {
      throw new ApiError(0, "timeout", "The server did not answer in time; try again.");
    }
    const ack = answer as Ack | null;
    if (ack && ack.ok === true) return ack as T;
    const error = ack?.error;
    throw new ApiError(0, error?.code ?? "internal", error?.message ?? "The server refused the request.");
  }

  private handleConnect(socket: SocketLike): void {
    if (this.socket !== socket) return;
    const reconnect = this.everConnected;
    this.everConnected = true;
    this.refreshedSince = false;
    this.serverBackoff.reset();
    this.stateStore.set("connected");
    for (const hook of this.connectHooks) hook(reconnect);
  }

  private handleDisconnect(socket: SocketLike, reason: string): void {
    if (this.socket !== socket) return;
    if (reason === "io client disconnect") {
      this.stateStore.set("closed");
      return;
    }
    this.stateStore.set("reconnecting");
    // The server closed the session itself (not a network drop): socket.io-client does not come back on
    // its own then, so connect again, after a jittered delay that doubles while the server keeps closing it
    // (a server that keeps refusing is not hammered, and its many clients do not all come back at once).
    if (reason === "io server disconnect") {
      setTimeout(() => {
        if (this.socket === socket && !socket.active) socket.connect();
      }, this.serverBackoff.next());
    }
  }

  private async handleConnectError(socket: SocketLike, error: Error & { data?: { code?: string } }): Promise<void> {
    if (this.socket !== socket) return;
    this.stateStore.set(this.everConnected ? "reconnecting" : "connecting");
    if (error.data?.code !== "unauthorized") return; // socket.io-client retries network failures itself
    if (this.refreshedSince) {
      this.stop(); // refused with a freshly refreshed token: the session is gone
      return;
    }
    this.refreshedSince = true;
    let ok: boolean;
    try {
      // The token this attempt was refused with: if a REST call has replaced it meanwhile, no second refresh.
      ok = await this.tokens.refresh(this.sentToken);
    } catch {
      ok = true; // the REST API could not be reached either: keep trying with what we have
    }
    if (this.socket !== socket) return;
    if (!ok) {
      this.stop();
      return;
    }
    if (!socket.active) socket.connect();
  }
}
