/**
 * The cases of tests/test_watch_client.py run against the TypeScript port (lib/watchsync.ts), plus the
 * late joiner with a skewed clock converging, against a simulated server and player (the Python test uses a
 * real server; here the server is a stand-in with the same arithmetic).
 */
import { describe, expect, it } from "vitest";

import type { Ack } from "../src/lib/live";
import {
  ClockSync,
  DEFAULT_SETTINGS,
  WatchSync,
  correct,
  rateAt,
  targetPosition,
  tuned,
  type Media,
  type Player,
  type WatchLink,
  type WatchState,
} from "../src/lib/watchsync";

const S = { ...DEFAULT_SETTINGS, nudge_threshold_s: 0.02, nudge_release_s: 0.005, max_nudge: 0.1, nudge_horizon_s: 1.0 };

/** A seeded generator (mulberry32), so the jitter is the same at every run. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const expovariate = (random: () => number, mean: number) => -Math.log(1 - random()) * mean;

describe("clock sync", () => {
  it("finds the offset through queueing jitter", () => {
    const random = rng(7);
    const sync = new ClockSync(16);
    const trueOffset = 1.734;
    const base = 0.08;
    let t = 1000;
    for (let i = 0; i < 16; i++) {
      const up = base + expovariate(random, 0.03);
      const down = base + expovariate(random, 0.03);
      const t1 = t;
      const t2 = t1 + up + trueOffset;
      const t3 = t2 + 0.004; // the server's own processing does not count as delay
      const t4 = t3 - trueOffset + down;
      sync.add(t1, t2, t3, t4);
      t += 1;
    }
    expect(Math.abs(sync.offset! - trueOffset)).toBeLessThanOrEqual(0.004);
    expect(Math.abs(sync.delay! - 2 * base)).toBeLessThanOrEqual(0.01);
    expect(sync.rttAvg).not.toBeNull();
    expect(sync.rttAvg!).toBeGreaterThan(2 * base);
    expect(sync.localTime(sync.serverTime(5.0))).toBeCloseTo(5.0, 9);
  });
});

describe("the correction rule", () => {
  it.each([
    [0.0, false, false, "in step", "rate", 1.0],
    [0.01, false, false, "under the nudge threshold", "rate", 1.0],
    [0.01, true, false, "already nudging: keep going down to the release point", "rate", 0.99],
    [0.003, true, false, "released", "rate", 1.0],
    [0.03, false, false, "ahead: slower", "rate", 0.97],
    [-0.03, false, false, "behind: faster", "rate", 1.03],
    [-0.3, false, false, "capped at max_nudge", "rate", 1.1],
    [0.05, false, true, "right after a change: hard sync", "seek", 1.0],
    [0.6, false, false, "too far at any time", "seek", 1.0],
  ] as const)("drift %s nudging %s fresh %s (%s)", (drift, nudging, fresh, _why, kind, rate) => {
    const fix = correct(drift, { baseRate: 1.0, nudging, fresh, settings: S });
    expect(fix.kind).toBe(kind);
    expect(fix.rate).toBeCloseTo(rate, 9);
  });
});

it("server tuning replaces the thresholds", () => {
  const t = tuned(S, { seek_threshold_s: 2, burst: 9, unknown: 1 });
  expect(t.seek_threshold_s).toBe(2.0);
  expect(t.burst).toBe(9);
  expect(t.nudge_threshold_s).toBe(S.nudge_threshold_s);
  expect("unknown" in t).toBe(false);
});

it("the target holds until a scheduled start and stops at the end", () => {
  const state = { playing: true, position: 5.0, server_time: 100.0, rate: 2.0, rate_before: 0.0, media: { duration: 10.0 } };
  expect(targetPosition(state, 99.0)).toBe(5.0);
  expect(targetPosition(state, 101.0)).toBe(7.0);
  expect(targetPosition(state, 200.0)).toBe(10.0);
  const switching = { ...state, rate_before: 1.0 }; // a rate change: the old rate until server_time
  expect(targetPosition(switching, 99.0)).toBe(4.0);
  expect([rateAt(switching, 99.0), rateAt(switching, 100.0)]).toEqual([1.0, 2.0]);
  expect(targetPosition({ ...state, playing: false }, 200.0)).toBe(5.0);
});

// --- a late joiner with a skewed clock on a slow link ----------------------------------------------

/** A player whose clock runs on the test's (real) time, with a rate error, that takes 30 ms to seek. */
class SimPlayer implements Player {
  playing = false;
  rate = 1;
  media: Media | null = null;
  private anchor = 0;
  private at = performance.now() / 1000;
  constructor(private readonly rateError = 0.002) {}
  shown(now = performance.now() / 1000): number {
    return this.anchor + (this.playing ? this.rate * (1 + this.rateError) * (now - this.at) : 0);
  }
  private rebase(): void {
    const now = performance.now() / 1000;
    this.anchor = this.shown(now);
    this.at = now;
  }
  position(): number {
    return this.shown();
  }
  isPlaying(): boolean {
    return this.playing;
  }
  load(media: Media | null): void {
    this.media = media;
    this.anchor = 0;
    this.playing = false;
    this.at = performance.now() / 1000;
  }
  play(): void {
    this.rebase();
    this.playing = true;
  }
  pause(): void {
    this.rebase();
    this.playing = false;
  }
  setRate(rate: number): void {
    this.rebase();
    this.rate = rate;
  }
  async seek(position: number): Promise<void> {
    await new Promise((r) => setTimeout(r, 30));
    this.anchor = position;
    this.at = performance.now() / 1000;
  }
}

/** The server, 1.8 s ahead of the client's clock, 60 ms away each way (with jitter). */
class SlowServer implements WatchLink {
  handlers = new Map<string, (data: unknown) => void>();
  state: WatchState;
  constructor(private readonly serverNow: () => number) {
    this.state = {
      room_id: "r",
      version: 3,
      media: { item_id: "i", url: "https://example.com/v.mp4", kind: "video", duration: 600, title: "V" },
      playing: true,
      position: 100,
      server_time: serverNow(),
      rate: 1,
      rate_before: 0,
      waiting: false,
      current: "i",
      playlist: [],
      control: "host",
      leader: null,
      ready_check: { mode: "off", count: null },
      changed_at: serverNow(),
      cause: "play",
      by: null,
    };
  }
  private delay(): Promise<void> {
    return new Promise((r) => setTimeout(r, 60 + Math.random() * 10));
  }
  async emit<T extends Ack = Ack>(event: string, data: unknown): Promise<T> {
    await this.delay();
    const received = this.serverNow();
    let answer: Record<string, unknown> = {};
    if (event === "watch:sync") answer = { state: this.state, tuning: { heartbeat_s: 0.2 } };
    if (event === "watch:heartbeat")
      answer = { received_at: received, server_time: this.serverNow(), version: this.state.version, data };
    await this.delay();
    return { ok: true, ...answer } as T;
  }
  on<T>(event: string, handler: (data: T) => void): () => void {
    this.handlers.set(event, handler as (data: unknown) => void);
    return () => this.handlers.delete(event);
  }
  push(state: WatchState): void {
    this.state = state;
    this.handlers.get("watch:state")?.(state);
  }
}

async function eventually(check: () => boolean, ms = 5000): Promise<void> {
  const until = performance.now() + ms;
  while (!check()) {
    if (performance.now() > until) throw new Error("not reached in time");
    await new Promise((r) => setTimeout(r, 20));
  }
}

it("a late joiner with a skewed clock on a slow link converges, follows a rate change and a pause", async () => {
  const real = () => performance.timeOrigin / 1000 + performance.now() / 1000;
  const server = new SlowServer(real);
  const player = new SimPlayer();
  const client = new WatchSync(server, "r", player, () => real() - 1.8);
  await client.start();
  try {
    const offBy = () => Math.abs(player.shown() - targetPosition(server.state, real()));
    await eventually(() => offBy() < 0.03);
    expect(client.sync.offset!).toBeCloseTo(1.8, 1);
    expect(Math.abs(client.sync.offset! - 1.8)).toBeLessThan(0.02);
    expect(client.settings.heartbeat_s).toBe(0.2); // the server's tuning

    const now = real();
    const faster = { ...server.state, version: 4, position: targetPosition(server.state, now + 0.2), server_time: now + 0.2,
                     rate: 1.5, rate_before: 1, cause: "rate" }; // prettier-ignore
    server.push(faster);
    await eventually(() => real() > faster.server_time + 0.3 && offBy() < 0.03 && Math.abs(player.rate - 1.5) < 0.1);

    const paused = { ...faster, version: 5, playing: false, position: targetPosition(faster, real()), server_time: real(),
                     cause: "pause" }; // prettier-ignore
    server.push(paused);
    await eventually(() => !player.playing && Math.abs(player.shown() - paused.position) < 0.01);

    server.push({ ...paused, version: 4, playing: true }); // an older version is ignored
    await new Promise((r) => setTimeout(r, 150));
    expect(player.playing).toBe(false);
  } finally {
    client.stop();
  }
});

// --- WatchSync against a stand-in server: commands, versions, missed broadcasts, a held start ---------

class Recorder implements WatchLink {
  emitted: [string, Record<string, unknown>][] = [];
  handlers = new Map<string, (data: unknown) => void>();
  constructor(
    public state: WatchState,
    public beatVersion = state.version,
  ) {}
  async emit<T extends Ack = Ack>(event: string, data: unknown): Promise<T> {
    const body = data as Record<string, unknown>;
    this.emitted.push([event, body]);
    const now = real();
    if (event === "watch:heartbeat") return { ok: true, received_at: now, server_time: now, version: this.beatVersion } as unknown as T;
    if (event === "watch:sync") return { ok: true, state: this.state, tuning: { burst: 1, burst_interval_s: 0 } } as unknown as T;
    this.state = { ...this.state, version: this.state.version + 1, cause: event };
    return { ok: true, state: this.state } as unknown as T;
  }
  on<T>(event: string, handler: (data: T) => void): () => void {
    this.handlers.set(event, handler as (data: unknown) => void);
    return () => this.handlers.delete(event);
  }
  count(event: string): number {
    return this.emitted.filter(([e]) => e === event).length;
  }
}

const real = () => performance.timeOrigin / 1000 + performance.now() / 1000;

function pausedAt(position: number, version = 1): WatchState {
  const s = new SlowServer(real).state;
  return { ...s, version, playing: false, position, server_time: real() };
}

describe("WatchSync", () => {
  it("sends commands based on the version held, and ignores an older state", async () => {
    const link = new Recorder(pausedAt(12));
    const player = new SimPlayer(0);
    const client = new WatchSync(link, "r", player, real);
    await client.start();
    try {
      await eventually(() => Math.abs(player.shown() - 12) < 0.01 && player.media !== null);
      await client.command("watch:seek", { position: 30 });
      const seek = link.emitted.find(([e]) => e === "watch:seek")![1];
      expect(seek).toEqual({ room_id: "r", position: 30, version: 1 });
      expect(client.version).toBe(2);
      link.handlers.get("watch:state")!({ ...pausedAt(99, 1) }); // an echo of an old state
      expect(client.version).toBe(2);
      link.handlers.get("watch:state")!({ ...pausedAt(5, 9), room_id: "another room" });
      expect(client.version).toBe(2);
    } finally {
      client.stop();
    }
  });

  it("asks for the state again when a heartbeat says a broadcast was missed", async () => {
    const link = new Recorder(pausedAt(3));
    const client = new WatchSync(link, "r", new SimPlayer(0), real);
    await client.start();
    try {
      expect(link.count("watch:sync")).toBe(1);
      link.state = pausedAt(40, 7);
      link.beatVersion = 7;
      await client.heartbeat();
      expect(link.count("watch:sync")).toBe(2);
      expect(client.version).toBe(7);
      const beat = link.emitted.filter(([e]) => e === "watch:heartbeat").at(-1)![1];
      expect(beat).toMatchObject({ room_id: "r", playing: false, version: 1 });
      expect(typeof beat.offset).toBe("number"); // the clock is synced by then: offset and rtt go along
    } finally {
      client.stop();
    }
  });

  it("holds a start scheduled in the future at its position, then starts on the instant", async () => {
    const start = real() + 0.4;
    const held = { ...pausedAt(20, 2), playing: true, server_time: start, rate_before: 0 };
    const link = new Recorder(held);
    const player = new SimPlayer(0);
    const client = new WatchSync(link, "r", player, real);
    await client.start();
    try {
      await eventually(() => Math.abs(player.shown() - 20) < 0.01);
      expect(player.playing).toBe(false);
      await eventually(() => player.playing, 2000);
      expect(real()).toBeGreaterThanOrEqual(start - 0.01);
      await eventually(() => Math.abs(player.shown() - targetPosition(held, real())) < 0.03);
    } finally {
      client.stop();
    }
  });
});
