import { get } from "svelte/store";
import { describe, expect, it, vi } from "vitest";

import { LiveConnection, RECONNECT, type SocketLike, type TokenSource } from "../src/lib/live";

type Handler = (...args: never[]) => void;

/** Enough of a socket.io-client Socket to drive the connection's state machine. */
class FakeSocket implements SocketLike {
  connected = false;
  active = true;
  handlers = new Map<string, Handler[]>();
  managerHandlers = new Map<string, Handler[]>();
  connects = 0;
  disconnected = false;
  authSent: unknown[] = [];
  constructor(private readonly auth: (cb: (data: object) => void) => void) {}

  on(event: string, handler: Handler): this {
    this.handlers.set(event, [...(this.handlers.get(event) ?? []), handler]);
    return this;
  }
  off(event: string, handler?: Handler): this {
    this.handlers.set(event, (this.handlers.get(event) ?? []).filter((h) => handler && h !== handler));
    return this;
  }
  fire(event: string, ...args: unknown[]): void {
    for (const handler of this.handlers.get(event) ?? []) (handler as (...a: unknown[]) => void)(...args);
  }
  io = {
    on: (event: string, handler: Handler) => {
      this.managerHandlers.set(event, [...(this.managerHandlers.get(event) ?? []), handler]);
    },
  };
  handshake(): void {
    this.auth((data) => this.authSent.push(data));
  }
  connect(): this {
    this.connects += 1;
    this.active = true;
    return this;
  }
  disconnect(): this {
    this.disconnected = true;
    this.active = false;
    return this;
  }
  timeout(): { emitWithAck: () => Promise<unknown> } {
    return { emitWithAck: async () => ({ ok: true }) };
  }
  // What socket.io-client does on its own:
  accept(): void {
    this.connected = true;
    this.fire("connect");
  }
  refuse(code: string): void {
    this.active = false; // a refusal by the server's middleware stops the manager's own retries
    this.fire("connect_error", Object.assign(new Error(code), { data: { code } }));
  }
  drop(): void {
    this.connected = false;
    this.fire("disconnect", "transport close");
  }
}

function setUp(refreshAnswer: boolean | "throw" = true) {
  const tokens = {
    accessToken: "a1" as string | null,
    refreshes: [] as (string | null)[],
    async refresh(stale: string | null): Promise<boolean> {
      this.refreshes.push(stale);
      if (refreshAnswer === "throw") throw new Error("offline");
      if (refreshAnswer) this.accessToken = "a2";
      return refreshAnswer;
    },
  };
  const source: TokenSource = tokens;
  let socket: FakeSocket | null = null;
  const live = new LiveConnection(source, (options) => {
    socket = new FakeSocket(options.auth as (cb: (data: object) => void) => void);
    return socket;
  });
  live.start();
  return { live, tokens, socket: () => socket as unknown as FakeSocket };
}

const flush = () => new Promise((resolve) => setTimeout(resolve, 0));

describe("LiveConnection", () => {
  it("goes connecting → connected → reconnecting → connected, and tells hooks which connect was a reconnect", () => {
    const { live, socket } = setUp();
    const seen: boolean[] = [];
    live.onConnect((reconnect) => seen.push(reconnect));
    expect(get(live.state)).toBe("connecting");
    socket().accept();
    expect(get(live.state)).toBe("connected");
    socket().drop();
    expect(get(live.state)).toBe("reconnecting");
    socket().accept();
    expect(get(live.state)).toBe("connected");
    expect(seen).toEqual([false, true]);
  });

  it("sends the current access token at every handshake", () => {
    const { tokens, socket } = setUp();
    socket().handshake();
    tokens.accessToken = "a9";
    socket().handshake();
    expect(socket().authSent).toEqual([{ token: "a1" }, { token: "a9" }]);
  });

  it("opens while the token is fetched, and sends the token once it has arrived (then at once again)", async () => {
    const tokens = { accessToken: null as string | null, refresh: async () => true };
    let socket: FakeSocket | null = null;
    const live = new LiveConnection(tokens, (options) => {
      socket = new FakeSocket(options.auth as (cb: (data: object) => void) => void);
      return socket;
    });
    let arrive: (ok: boolean) => void = () => {};
    const restoring = new Promise<boolean>((resolve) => (arrive = resolve));
    live.start(restoring);
    const opened = socket as unknown as FakeSocket;
    opened.handshake(); // the websocket is open before the refresh has answered
    await flush();
    expect(opened.authSent).toEqual([]);
    tokens.accessToken = "fresh";
    arrive(true);
    await flush();
    expect(opened.authSent).toEqual([{ token: "fresh" }]);
    tokens.accessToken = "later";
    opened.handshake(); // a reconnect does not wait again
    expect(opened.authSent).toEqual([{ token: "fresh" }, { token: "later" }]);
  });

  it("refreshes once when the handshake is refused as unauthorized, then connects again", async () => {
    const { live, tokens, socket } = setUp();
    socket().handshake(); // sent a1
    socket().refuse("unauthorized");
    await flush();
    expect(tokens.refreshes).toEqual(["a1"]); // a1 was refused: refresh unless already replaced
    expect(socket().connects).toBe(1);
    socket().handshake();
    expect(socket().authSent.at(-1)).toEqual({ token: "a2" });
    socket().accept();
    expect(get(live.state)).toBe("connected");
  });

  it("stops when the refreshed token is refused too (the session is gone)", async () => {
    const { live, tokens, socket } = setUp();
    socket().refuse("unauthorized");
    await flush();
    socket().refuse("unauthorized");
    await flush();
    expect(tokens.refreshes).toHaveLength(1);
    expect(get(live.state)).toBe("closed");
    expect(socket().disconnected).toBe(true);
  });

  it("stops when the refresh is refused", async () => {
    const { live, socket } = setUp(false);
    socket().refuse("unauthorized");
    await flush();
    expect(get(live.state)).toBe("closed");
  });

  it("leaves network failures to socket.io-client's own retries", async () => {
    const { live, tokens, socket } = setUp();
    socket().accept();
    socket().drop();
    socket().fire("connect_error", new Error("xhr poll error"));
    await flush();
    expect(tokens.refreshes).toEqual([]);
    expect(socket().connects).toBe(0);
    expect(get(live.state)).toBe("reconnecting");
  });

  it("keeps subscriptions across reconnects and drops them on unsubscribe", () => {
    const { live, socket } = setUp();
    const got: unknown[] = [];
    const off = live.on<{ n: number }>("notification:new", (data) => got.push(data.n));
    socket().fire("notification:new", { n: 1 });
    socket().drop();
    socket().accept();
    socket().fire("notification:new", { n: 2 });
    off();
    socket().fire("notification:new", { n: 3 });
    expect(got).toEqual([1, 2]);
  });

  it("answers an emit while disconnected with a clear error", async () => {
    const { live } = setUp();
    await expect(live.emit("chat:send", {})).rejects.toMatchObject({ code: "unavailable" });
  });
  it("reconnects with jittered exponential backoff, so a dead node's clients do not all come back at once", () => {
    let options: Record<string, unknown> = {};
    const live = new LiveConnection({ accessToken: "a1", refresh: async () => true }, (o) => {
      options = o as Record<string, unknown>;
      return new FakeSocket(o.auth as (cb: (data: object) => void) => void);
    });
    live.start();
    expect(options).toMatchObject(RECONNECT);
    // socket.io-client's delay: base × 2^attempt, up to the max, randomised by ±factor: the first attempts of
    // many clients spread over [0.1 s, 1.9 s] rather than one instant.
    expect(RECONNECT.randomizationFactor).toBeGreaterThanOrEqual(0.5);
    expect(RECONNECT.reconnectionDelay * (1 - RECONNECT.randomizationFactor)).toBeLessThanOrEqual(100);
    expect(RECONNECT.reconnectionDelay * (1 + RECONNECT.randomizationFactor)).toBeGreaterThanOrEqual(1900);
    expect(RECONNECT.reconnectionDelayMax).toBeGreaterThan(RECONNECT.reconnectionDelay * 4);
  });

  it("after the server closed the session, connects again after a jittered delay that doubles until a connect", () => {
    vi.useFakeTimers();
    try {
      let draw = 0;
      const draws = [0, 0, 1];
      let socket: FakeSocket | null = null;
      const live = new LiveConnection(
        { accessToken: "a1", refresh: async () => true },
        (o) => (socket = new FakeSocket(o.auth as (cb: (data: object) => void) => void)),
        10_000,
        () => draws[draw++ % draws.length] as number,
      );
      live.start();
      const s = socket as unknown as FakeSocket;
      s.accept();
      const closedByServer = () => {
        s.connected = false;
        s.active = false;
        s.fire("disconnect", "io server disconnect");
      };
      closedByServer();
      vi.advanceTimersByTime(499);
      expect(s.connects).toBe(0);
      vi.advanceTimersByTime(1); // first retry: 1 s ceiling, drawn at its lower half (500 ms)
      expect(s.connects).toBe(1);
      s.active = false;
      closedByServer(); // refused again before connecting: the ceiling doubles (2 s, drawn low: 1 s)
      vi.advanceTimersByTime(999);
      expect(s.connects).toBe(1);
      vi.advanceTimersByTime(1);
      expect(s.connects).toBe(2);
      s.accept(); // a connect resets the pacing
      closedByServer();
      vi.advanceTimersByTime(999); // 1 s ceiling, drawn at its top
      expect(s.connects).toBe(2);
      vi.advanceTimersByTime(1);
      expect(s.connects).toBe(3);
    } finally {
      vi.useRealTimers();
    }
  });
});
