/**
 * The watch party's correction logic, ported from the reference client `watch_party/client.py` (its
 * docstring and docs/watch-parties.md, "Keeping a player in step", explain the rules), and `WatchSync`,
 * which keeps one local player (the room's `<video>`) in step with the room's shared state over the app's
 * Socket.IO connection.
 *
 * 1. **Clock**: heartbeats carry `client_time = t1`; the ack gives `received_at` (t2) and `server_time`
 *    (t3), the arrival is t4. The offset (server minus local) is `(min(t2 − t1) − min(t4 − t3)) / 2` over
 *    the last `window` round trips.
 * 2. **Target**: `position + rate × (T − server_time)` while playing (`rate_before` before `server_time`),
 *    clamped to the media; `position` when paused. A start in the future is made by a timer on that instant.
 * 3. **Correction** every `correction_interval_s`: seek when far off (or off by `hard_sync_s` right after a
 *    change of the timeline), nudge `playbackRate` in proportion to a small drift, else play at the rate.
 *
 * The seeks made to follow the state are never sent as commands; only the user's own actions are.
 */
import { writable, type Readable } from "svelte/store";

import type { Ack } from "./live";

export interface SyncSettings {
  heartbeat_s: number;
  hard_sync_s: number;
  seek_threshold_s: number;
  nudge_threshold_s: number;
  nudge_release_s: number;
  max_nudge: number;
  nudge_horizon_s: number;
  paused_tolerance_s: number;
  correction_interval_s: number;
  /** Heartbeats sent in quick succession at the start, to sync the clock at once. */
  burst: number;
  burst_interval_s: number;
  /** Round trips the clock filter chooses from. */
  window: number;
}

export const DEFAULT_SETTINGS: Readonly<SyncSettings> = Object.freeze({
  heartbeat_s: 1.0,
  hard_sync_s: 0.04,
  seek_threshold_s: 0.5,
  nudge_threshold_s: 0.005,
  nudge_release_s: 0.001,
  max_nudge: 0.1,
  nudge_horizon_s: 1.0,
  paused_tolerance_s: 0.005,
  correction_interval_s: 0.1,
  burst: 5,
  burst_interval_s: 0.1,
  window: 16,
});

const WHOLE: ReadonlySet<string> = new Set(["burst", "window"]);

/** `settings` with the server's `tuning` applied (unknown keys and non-numbers ignored). */
export function tuned(settings: SyncSettings, tuning: Record<string, unknown> | undefined): SyncSettings {
  const out: SyncSettings = { ...settings };
  for (const [key, value] of Object.entries(tuning ?? {})) {
    if (!(key in out) || typeof value !== "number" || !Number.isFinite(value)) continue;
    (out as unknown as Record<string, number>)[key] = WHOLE.has(key) ? Math.trunc(value) : value;
  }
  return out;
}

// --- clock sync ------------------------------------------------------------------------------------

/** Estimates `server clock − local clock` from heartbeat round trips (each direction's minimum). */
export class ClockSync {
  private readonly up: number[] = [];
  private readonly down: number[] = [];
  rttAvg: number | null = null;
  offset: number | null = null;
  /** The least round trip in the window, without the server's processing time. */
  delay: number | null = null;

  constructor(
    readonly window = 16,
    readonly rttWeight = 0.85,
  ) {}

  /** One round trip: sent at local `t1`, received by the server at `t2`, answered at `t3`, back at `t4`. */
  add(t1: number, t2: number, t3: number, t4: number): void {
    this.up.push(t2 - t1);
    this.down.push(t4 - t3);
    if (this.up.length > this.window) this.up.shift();
    if (this.down.length > this.window) this.down.shift();
    const up = Math.min(...this.up);
    const down = Math.min(...this.down);
    this.offset = (up - down) / 2;
    this.delay = Math.max(0, up + down);
    const rtt = t4 - t1;
    this.rttAvg = this.rttAvg === null ? rtt : this.rttAvg * this.rttWeight + rtt * (1 - this.rttWeight);
  }

  get synced(): boolean {
    return this.offset !== null;
  }

  serverTime(local: number): number {
    return local + (this.offset ?? 0);
  }

  localTime(server: number): number {
    return server - (this.offset ?? 0);
  }
}

// --- the correction rule ---------------------------------------------------------------------------

export interface Correction {
  kind: "seek" | "rate";
  rate: number;
}

/** What to do about `drift` (player minus target, seconds) while playing at `baseRate`. */
export function correct(
  drift: number,
  opts: { baseRate: number; nudging: boolean; fresh: boolean; settings: SyncSettings },
): Correction {
  const { baseRate, nudging, fresh, settings: s } = opts;
  const size = Math.abs(drift);
  if (size >= s.seek_threshold_s || (fresh && size >= s.hard_sync_s)) return { kind: "seek", rate: baseRate };
  if (size >= s.nudge_threshold_s || (nudging && size > s.nudge_release_s)) {
    const nudge = Math.max(-s.max_nudge, Math.min(s.max_nudge, drift / s.nudge_horizon_s));
    return { kind: "rate", rate: baseRate * (1 - nudge) };
  }
  return { kind: "rate", rate: baseRate };
}

export interface Media {
  item_id?: string;
  url: string | null;
  kind: "video" | "hls" | "audio";
  duration?: number | null;
  title?: string | null;
  lecture_id?: string | null;
  locked?: boolean;
  locked_reason?: string;
}

export interface Person {
  id: string;
  display_name: string;
}

/** The timeline part of the state (what `targetPosition` needs). */
export interface Timeline {
  playing: boolean;
  position: number;
  server_time: number;
  rate: number;
  rate_before?: number;
  media?: Partial<Media> | null;
}

export interface WatchState extends Timeline {
  room_id: string;
  version: number;
  media: Media | null;
  waiting: boolean;
  current: string | null;
  playlist: { id: string; media: Media; added_by: Person | null }[];
  control: "host" | "everyone";
  leader: Person | null;
  ready_check: { mode: "off" | "all" | "count"; count: number | null };
  changed_at: number;
  cause: string;
  by: Person | null;
}

export interface Readiness {
  room_id: string;
  item_id: string | null;
  ready: string[];
  rev: number;
  check: { mode: string; count: number | null };
  present: number;
  met: boolean;
}

/** Where the shared player is at server time `serverNow`. */
export function targetPosition(state: Timeline, serverNow: number): number {
  let position = Number(state.position);
  if (state.playing) {
    const since = serverNow - state.server_time;
    position = since >= 0 ? position + state.rate * since : position + (state.rate_before ?? 0) * since;
    position = Math.max(0, position);
  }
  const duration = state.media?.duration;
  return duration !== undefined && duration !== null ? Math.min(position, duration) : position;
}

/** The shared player's rate at server time `serverNow` (0 while holding for a start). */
export function rateAt(state: Timeline, serverNow: number): number {
  return serverNow >= state.server_time ? state.rate : (state.rate_before ?? 0);
}

function timelineKey(state: WatchState): string {
  return JSON.stringify([
    state.media?.item_id ?? null,
    state.playing,
    state.position,
    state.server_time,
    state.rate,
    state.rate_before ?? 0,
  ]);
}

// --- keeping a player in step ----------------------------------------------------------------------

/** The local player (the room's `<video>`). */
export interface Player {
  position(): number;
  isPlaying(): boolean;
  /** Open `media` (null: nothing), paused at 0. */
  load(media: Media | null): void;
  play(): void;
  pause(): void;
  setRate(rate: number): void;
  /** Jump to `position`; resolves once the player can show it. */
  seek(position: number): Promise<void>;
}

/** What this module uses of `LiveConnection` (tests pass a stand-in). */
export interface WatchLink {
  emit<T extends Ack = Ack>(event: string, data: unknown): Promise<T>;
  on<T>(event: string, handler: (data: T) => void): () => void;
}

interface SyncAck extends Ack {
  state: WatchState;
  readiness?: Readiness;
  tuning?: Record<string, unknown>;
}

interface BeatAck extends Ack {
  received_at: number;
  server_time: number;
  version: number;
}

/** The local clock in seconds, sub-millisecond where the browser allows. */
export const wallClock = (): number =>
  typeof performance !== "undefined" && performance.timeOrigin
    ? (performance.timeOrigin + performance.now()) / 1000
    : Date.now() / 1000;

export class WatchSync {
  settings: SyncSettings;
  sync: ClockSync;
  seekLag = 0;
  private current: WatchState | null = null;
  private loaded: string | null | undefined = undefined;
  private fresh = false;
  private nudging = false;
  private seeking = false;
  private stopped = false;
  private startTimer: ReturnType<typeof setTimeout> | null = null;
  private loop: ReturnType<typeof setInterval> | null = null;
  private beats: ReturnType<typeof setInterval> | null = null;
  private readonly unsubscribe: (() => void)[] = [];
  private readonly stateStore = writable<WatchState | null>(null);
  private readonly readinessStore = writable<Readiness | null>(null);

  /** The newest state held (by `version`). */
  readonly state: Readable<WatchState | null> = this.stateStore;
  readonly readiness: Readable<Readiness | null> = this.readinessStore;

  constructor(
    private readonly link: WatchLink,
    readonly roomId: string,
    private readonly player: Player,
    private readonly clock: () => number = wallClock,
    settings: SyncSettings = DEFAULT_SETTINGS,
  ) {
    this.settings = { ...settings };
    this.sync = new ClockSync(this.settings.window);
  }

  get version(): number | null {
    return this.current?.version ?? null;
  }

  /** Fetches the state and tuning, syncs the clock with a burst of heartbeats, then keeps in step. */
  async start(): Promise<void> {
    this.stopped = false;
    if (this.unsubscribe.length === 0) {
      this.unsubscribe.push(
        this.link.on<WatchState>("watch:state", (s) => s?.room_id === this.roomId && this.apply(s)),
        this.link.on<Readiness>("watch:readiness", (r) => r?.room_id === this.roomId && this.takeReadiness(r)),
      );
    }
    const ack = await this.link.emit<SyncAck>("watch:sync", { room_id: this.roomId });
    this.settings = tuned(this.settings, ack.tuning);
    this.sync = new ClockSync(this.settings.window);
    if (ack.readiness) this.takeReadiness(ack.readiness);
    for (let i = 0; i < this.settings.burst && !this.stopped; i++) {
      await this.heartbeat().catch(() => {});
      await new Promise((r) => setTimeout(r, this.settings.burst_interval_s * 1000));
    }
    if (this.stopped) return;
    this.apply(ack.state);
    this.beats ??= setInterval(() => void this.heartbeat().catch(() => {}), this.settings.heartbeat_s * 1000);
    this.loop ??= setInterval(() => void this.step(), this.settings.correction_interval_s * 1000);
  }

  stop(): void {
    this.stopped = true;
    for (const off of this.unsubscribe.splice(0)) off();
    if (this.startTimer !== null) clearTimeout(this.startTimer);
    if (this.loop !== null) clearInterval(this.loop);
    if (this.beats !== null) clearInterval(this.beats);
    this.startTimer = this.loop = this.beats = null;
  }

  /** Sends a `watch:*` command based on the state held; applies and returns the new state. */
  async command(event: string, fields: Record<string, unknown> = {}): Promise<WatchState> {
    const payload: Record<string, unknown> = { room_id: this.roomId, ...fields };
    if (this.version !== null && !("version" in payload)) payload.version = this.version;
    const ack = await this.link.emit<SyncAck>(event, payload);
    this.apply(ack.state);
    return ack.state;
  }

  async setReady(ready: boolean): Promise<Readiness> {
    const ack = await this.link.emit<{ ok: boolean; readiness: Readiness }>("watch:ready", { room_id: this.roomId, ready });
    this.takeReadiness(ack.readiness);
    return ack.readiness;
  }

  async resync(): Promise<void> {
    const ack = await this.link.emit<SyncAck>("watch:sync", { room_id: this.roomId });
    this.apply(ack.state);
    if (ack.readiness) this.takeReadiness(ack.readiness);
  }

  /** Takes `state` if it is newer than the one held; the player follows at once. */
  apply(state: WatchState): void {
    if (!state || (this.current !== null && state.version <= this.current.version)) return;
    const previous = this.current;
    this.current = state;
    this.stateStore.set(state);
    if (previous === null || timelineKey(previous) !== timelineKey(state)) {
      this.fresh = true;
      this.scheduleStart();
    }
    if (!this.stopped) queueMicrotask(() => void this.step());
  }

  private takeReadiness(r: Readiness): void {
    this.readinessStore.update((held) => (held === null || r.rev >= held.rev || r.item_id !== held.item_id ? r : held));
  }

  async heartbeat(): Promise<void> {
    const t1 = this.clock();
    const payload: Record<string, unknown> = {
      room_id: this.roomId,
      position: Math.max(0, this.player.position() || 0),
      playing: this.player.isPlaying(),
      client_time: t1,
    };
    if (this.version !== null) payload.version = this.version;
    if (this.sync.synced) {
      payload.offset = this.sync.offset;
      payload.rtt = this.sync.rttAvg;
    }
    const ack = await this.link.emit<BeatAck>("watch:heartbeat", payload);
    this.sync.add(t1, ack.received_at, ack.server_time, this.clock());
    if (this.version !== null && ack.version > this.version) await this.resync(); // a broadcast went missing
  }

  /** Where the player should be now, or null with nothing to show. */
  target(): number | null {
    if (this.current === null || this.current.media === null) return null;
    return targetPosition(this.current, this.sync.serverTime(this.clock()));
  }

  private scheduleStart(): void {
    if (this.startTimer !== null) clearTimeout(this.startTimer);
    this.startTimer = null;
    const state = this.current;
    if (state === null || !state.playing || state.media === null) return;
    const delay = this.sync.localTime(state.server_time) - this.clock();
    if (delay > 0) this.startTimer = setTimeout(() => this.startNow(), delay * 1000);
  }

  private startNow(): void {
    this.startTimer = null;
    if (this.current?.playing && !this.seeking && !this.stopped) {
      this.nudging = false;
      this.player.setRate(this.current.rate);
      this.player.play();
    }
    void this.step();
  }

  /** One pass of the correction rule. */
  async step(): Promise<void> {
    const state = this.current;
    if (state === null || this.seeking || this.stopped) return;
    const media = state.media;
    const itemId = media?.url ? (media.item_id ?? media.url) : null;
    if (itemId !== this.loaded) {
      this.loaded = itemId;
      this.player.load(media?.url ? media : null);
    }
    if (!media?.url) return;
    const s = this.settings;
    const serverNow = this.sync.serverTime(this.clock());
    const rate = state.playing ? rateAt(state, serverNow) : 0;
    if (state.playing && serverNow < state.server_time && this.startTimer === null) this.scheduleStart();
    if (rate === 0) {
      if (this.player.isPlaying()) this.player.pause();
      this.nudging = false;
      if (Math.abs(this.player.position() - state.position) > s.paused_tolerance_s) await this.seekTo(state.position);
      return;
    }
    if (!this.player.isPlaying()) this.player.play();
    const drift = this.player.position() - targetPosition(state, serverNow);
    const fix = correct(drift, { baseRate: rate, nudging: this.nudging, fresh: this.fresh, settings: s });
    this.fresh = false;
    if (fix.kind === "seek") {
      this.nudging = false;
      this.player.setRate(rate);
      const ahead = this.sync.serverTime(this.clock()) + this.seekLag;
      await this.seekTo(targetPosition(state, ahead));
    } else {
      this.nudging = fix.rate !== rate;
      this.player.setRate(fix.rate);
    }
  }

  private async seekTo(position: number): Promise<void> {
    this.seeking = true;
    const started = this.clock();
    try {
      await this.player.seek(position);
    } finally {
      this.seeking = false;
    }
    // The player stalls while it seeks: aim the next seek made while playing that much further ahead.
    this.seekLag = 0.5 * this.seekLag + 0.5 * (this.clock() - started);
  }
}
