/**
 * The lecture player's progress reports (`PUT /lectures/{id}/progress {position_s}`) and where it resumes.
 *
 * The server completes a lecture from what it saw watched (core_api/watching.py): two consecutive reports
 * show the stretch between their positions watched when the position moved forward no faster than
 * `STUDYHALL_PROGRESS_MAX_RATE` (2) times the server-clock time between them. So the player reports:
 * - every `intervalMs` while playing (a heartbeat: each stretch between two heartbeats counts);
 * - at once on pause, on a seek (the position after a jump becomes the base of the next stretch, so the
 *   watching after a seek counts from there), at the end, and when the page goes away;
 * - one report at a time, in order: a report due while one is in flight waits and sends the newest
 *   position when the first answers (the server compares each report with the previous one);
 * - nothing when the position has not changed since the last report (a paused player sends nothing).
 * A failed report is told to `onError` once per failure streak and the next heartbeat tries again.
 */

export interface ProgressClock {
  setInterval(fn: () => void, ms: number): unknown;
  clearInterval(handle: unknown): void;
}

export interface ReporterOptions<T> {
  /** Sends one report; resolves with the server's answer. */
  send: (positionS: number) => Promise<T>;
  /** The player's current position, in seconds. */
  position: () => number;
  /** Called with each answer (e.g. to show "completed"). */
  onSaved?: (answer: T) => void;
  /** Called with the first error of a streak of failed reports; `null` when reports succeed again. */
  onError?: (error: unknown) => void;
  intervalMs?: number;
  clock?: ProgressClock;
}

export const HEARTBEAT_MS = 5000;
/** Positions closer than this are "the same" (a paused player's position jitters by a few ms). */
const SAME_S = 0.05;

export class ProgressReporter<T = unknown> {
  private timer: unknown = null;
  private inFlight: Promise<void> | null = null;
  private pending = false;
  private lastSent: number | null = null;
  private failing = false;
  private stopped = false;
  private started = false;
  private readonly intervalMs: number;
  private readonly clock: ProgressClock;

  constructor(private readonly options: ReporterOptions<T>) {
    this.intervalMs = options.intervalMs ?? HEARTBEAT_MS;
    this.clock = options.clock ?? {
      setInterval: (fn, ms) => globalThis.setInterval(fn, ms),
      clearInterval: (handle) => globalThis.clearInterval(handle as ReturnType<typeof setInterval>),
    };
  }

  /** The player started (or resumed) playing: report now and then every interval. */
  playing(): void {
    if (this.stopped) return;
    this.started = true;
    this.report();
    if (this.timer === null) this.timer = this.clock.setInterval(() => this.report(), this.intervalMs);
  }

  /** The player paused or ended: one last report, then no heartbeat until it plays again. */
  paused(): void {
    this.stopTimer();
    this.report();
  }

  /** The learner jumped: the new position is the base the next stretch is measured from. */
  seeked(): void {
    this.report();
  }

  /** The page goes away: a last report of where the learner was (if they played at all), and nothing after. */
  stop(): void {
    if (this.stopped) return;
    if (this.started) this.report();
    this.stopped = true;
    this.stopTimer();
  }

  /** Waits for the report in flight (and the one queued behind it), for tests and for leaving a page. */
  async settled(): Promise<void> {
    while (this.inFlight !== null) await this.inFlight;
  }

  /** Sends the current position unless it was the last one sent; queues it if a report is in flight. */
  report(): void {
    if (this.stopped) return;
    if (this.inFlight !== null) {
      this.pending = true;
      return;
    }
    const position = this.options.position();
    if (!Number.isFinite(position) || position < 0) return;
    if (this.lastSent !== null && Math.abs(position - this.lastSent) < SAME_S) return;
    this.inFlight = this.sendNow(position).finally(() => {
      this.inFlight = null;
      if (this.pending) {
        this.pending = false;
        this.report();
      }
    });
  }

  private async sendNow(position: number): Promise<void> {
    try {
      const answer = await this.options.send(position);
      this.lastSent = position;
      if (this.failing) {
        this.failing = false;
        this.options.onError?.(null);
      }
      this.options.onSaved?.(answer);
    } catch (error) {
      if (!this.failing) {
        this.failing = true;
        this.options.onError?.(error);
      }
    }
  }

  private stopTimer(): void {
    if (this.timer !== null) {
      this.clock.clearInterval(this.timer);
      this.timer = null;
    }
  }
}

/**
 * Where the player starts: the saved position, except that a lecture watched to (within a second of) its
 * end starts again from the beginning, and a position past the media's end is taken as its end.
 */
export function resumePoint(savedS: number | null | undefined, durationS: number): number {
  if (savedS === null || savedS === undefined || !Number.isFinite(savedS) || savedS <= 0) return 0;
  if (durationS > 0 && savedS >= durationS - 1) return 0;
  return durationS > 0 ? Math.min(savedS, durationS) : savedS;
}
