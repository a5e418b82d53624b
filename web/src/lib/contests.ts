/**
 * Contests (group wars, docs/group-wars.md): the REST calls of the contest screens, and the pure logic they
 * need — `StandingsFeed`, which folds the `contest:subscribe` answer and the live `leaderboard:update` pushes
 * into the standings shown (and which rows moved), the countdown, verdicts and standings cells in words.
 */
import type { ApiClient } from "./api";
import { messageOf } from "./errors";

export type ContestState = "scheduled" | "running" | "frozen" | "ended" | "finalised";

export interface Sample {
  stdin: string;
  expected_output: string;
}

export interface Problem {
  id: string;
  label: string;
  title: string;
  statement: string;
  samples: Sample[];
  cpu_ms: number;
  memory_kb: number;
  points: number;
  test_count: number;
}

export interface CommunityRef {
  id: string;
  name: string;
}

export interface Contest {
  id: string;
  title: string;
  description: string;
  starts_at: string;
  ends_at: string;
  freeze_at: string | null;
  scoring: "icpc" | "points";
  penalty_minutes: number;
  finalised_at: string | null;
  state: ContestState;
  communities: CommunityRef[];
  problems: Problem[];
  can_manage: boolean;
  prizes: number[];
  approval: { state: string; message: string | null };
  payout: { state: string; message: string | null };
}

export interface Submission {
  id: string;
  contest_id: string;
  problem_id: string;
  user_id: string;
  community_id: string;
  language: string;
  submitted_at: string;
  minute: number;
  verdict: string | null;
  passed: number | null;
  total: number | null;
  judged_at: string | null;
  disqualified: boolean;
}

export interface Cell {
  problem_id: string;
  solved: boolean;
  minute: number | null;
  rejected: number;
  pending: number;
  first_to_solve: boolean;
}

export interface PersonRow {
  rank: number;
  user_id: string;
  display_name: string;
  community_id: string | null;
  community_name: string | null;
  score: number;
  solved: number;
  penalty: number;
  problems: Cell[];
}

export interface CommunityRow {
  rank: number;
  community_id: string;
  name: string;
  score: number;
  solved: number;
  penalty: number;
}

/** `GET …/standings`, the `contest:subscribe` answer and each `leaderboard:update` push (the last two cut
 * to the first 100 rows of each list, with the totals). */
export interface Standings {
  contest_id: string;
  view: "public" | "jury";
  frozen: boolean;
  scoring: "icpc" | "points";
  people: PersonRow[];
  communities: CommunityRow[];
  people_total?: number;
  communities_total?: number;
}

export interface BoardEntry {
  rank: number;
  id: string;
  name: string | null;
  community_id: string | null;
  score: number;
  penalty: number;
}

export interface WalletEntry {
  id: string;
  amount: number;
  reason: string;
  ref: string;
  created_at: string;
  source: { kind: string; contest_id: string | null } | null;
}

export interface Wallet {
  balance: number;
  entries: WalletEntry[];
}

export interface Language {
  id: string;
  name: string;
  version: string;
}

export interface MyCommunity {
  id: string;
  name: string;
}

const path = encodeURIComponent;

/** Contests, the running ones first; `mine`: only those one of the user's communities takes part in. */
export const listContests = async (api: ApiClient, mine = false): Promise<Contest[]> =>
  (await api.get<{ items: Contest[] }>("/contests", mine ? { limit: 50, mine: true } : { limit: 50 })).items;

export const getContest = (api: ApiClient, id: string): Promise<Contest> => api.get<Contest>(`/contests/${path(id)}`);

export const mySubmissions = async (api: ApiClient, id: string): Promise<Submission[]> =>
  (await api.get<{ items: Submission[] }>(`/contests/${path(id)}/submissions`)).items;

export const submit = (
  api: ApiClient,
  contestId: string,
  problemId: string,
  body: { language: string; source: string; community_id?: string },
): Promise<Submission> => api.post<Submission>(`/contests/${path(contestId)}/problems/${path(problemId)}/submissions`, body);

export const allTimeBoard = async (api: ApiClient): Promise<BoardEntry[]> =>
  (await api.get<{ items: BoardEntry[] }>("/leaderboards/communities", { limit: 100 })).items;

export const getWallet = (api: ApiClient): Promise<Wallet> => api.get<Wallet>("/me/wallet");

export const listLanguages = async (api: ApiClient): Promise<Language[]> =>
  (await api.get<{ items: Language[] }>("/languages")).items;

/** The communities taking part in `contest` that the caller belongs to (a submission scores for one of them). */
export async function myCommunities(api: ApiClient, contest: Contest): Promise<MyCommunity[]> {
  const taking = new Set(contest.communities.map((c) => c.id));
  const mine: MyCommunity[] = [];
  let cursor: string | null = null;
  for (let page = 0; page < 10; page++) {
    const answer: { items: MyCommunity[]; next_cursor?: string | null } = await api.get("/communities", {
      mine: true,
      limit: 100,
      cursor,
    });
    for (const c of answer.items) if (taking.has(c.id)) mine.push({ id: c.id, name: c.name });
    cursor = answer.next_cursor ?? null;
    if (cursor === null) break;
  }
  return mine;
}

// --- live standings ------------------------------------------------------------------------------

export type Movement = "up" | "down" | "new";

/** A row of people is one (person, community): a person has one row per community they submitted for. */
export const personKey = (row: PersonRow): string => `${row.user_id}:${row.community_id ?? ""}`;

function movements<T>(before: T[] | null, after: T[], key: (row: T) => string, rank: (row: T) => number) {
  const moved = new Map<string, Movement>();
  if (before === null) return moved;
  const was = new Map(before.map((row) => [key(row), rank(row)]));
  for (const row of after) {
    const k = key(row);
    const old = was.get(k);
    if (old === undefined) moved.set(k, "new");
    else if (rank(row) < old) moved.set(k, "up");
    else if (rank(row) > old) moved.set(k, "down");
  }
  return moved;
}

/**
 * The standings of one contest as this tab knows them: the answer to `contest:subscribe`, then every
 * `leaderboard:update` for that contest (each carries the whole top of both lists, so the newest replaces
 * what was there). Pushes heard while a subscribe is in flight win over its answer: the server joins the
 * room before it reads the answer, so such a push is at most as old as the answer, and the server pushes
 * again after every change it had not yet pushed (the coalescer's trailing push), while a push dropped for
 * being early might be the last one. `moved` says which rows changed rank with the last change.
 */
export class StandingsFeed {
  private standings: Standings | null = null;
  private pushedDuringSubscribe = false;
  private subscribing = false;
  movedPeople = new Map<string, Movement>();
  movedCommunities = new Map<string, Movement>();

  constructor(readonly contestId: string) {}

  get current(): Standings | null {
    return this.standings;
  }

  /** A `contest:subscribe` is about to be sent (at every (re)connect). */
  subscribeSent(): void {
    this.subscribing = true;
    this.pushedDuringSubscribe = false;
  }

  /** Its answer; true when it changed what is shown. */
  subscribed(standings: Standings): boolean {
    this.subscribing = false;
    if (this.pushedDuringSubscribe) return false;
    return this.replace(standings);
  }

  /** A `leaderboard:update` (or the `contest:downgraded` standings); pushes of other contests are ignored. */
  push(standings: Standings): boolean {
    if (standings.contest_id !== this.contestId) return false;
    if (this.subscribing) this.pushedDuringSubscribe = true;
    return this.replace(standings);
  }

  private replace(next: Standings): boolean {
    const before = this.standings;
    this.movedPeople = movements(before?.people ?? null, next.people, personKey, (r) => r.rank);
    this.movedCommunities = movements(before?.communities ?? null, next.communities, (r) => r.community_id, (r) => r.rank);
    this.standings = next;
    return true;
  }
}

// --- words ---------------------------------------------------------------------------------------

const VERDICTS: Record<string, string> = {
  accepted: "Accepted",
  wrong_answer: "Wrong answer",
  compile_error: "Compile error",
  runtime_error: "Runtime error",
  time_limit_exceeded: "Time limit exceeded",
  memory_limit_exceeded: "Memory limit exceeded",
  output_limit_exceeded: "Output limit exceeded",
  internal_error: "Internal error",
  skipped: "Skipped",
};

/** A submission's verdict in words: "Waiting for the judge…", "Accepted (2/2 tests)", "Wrong answer (1/2 tests)". */
export function verdictText(s: Pick<Submission, "verdict" | "passed" | "total" | "disqualified">): string {
  if (s.disqualified) return "Disqualified";
  if (s.verdict === null) return "Waiting for the judge…";
  const name = VERDICTS[s.verdict] ?? s.verdict.replaceAll("_", " ");
  return s.passed !== null && s.total !== null ? `${name} (${s.passed}/${s.total} tests)` : name;
}

/** How a standings cell reads: "+" solved (with its minute and rejected tries), "−2" two rejected, "?1" one
 * pending (frozen), "" nothing tried. */
export function cellText(cell: Cell | undefined): string {
  if (!cell) return "";
  if (cell.solved) return `+${cell.rejected || ""}` + (cell.minute === null ? "" : ` ${cell.minute}′`);
  const parts: string[] = [];
  if (cell.rejected) parts.push(`−${cell.rejected}`);
  if (cell.pending) parts.push(`?${cell.pending}`);
  return parts.join(" ");
}

/** The same cell for screen readers. */
export function cellLabel(cell: Cell | undefined): string {
  if (!cell) return "not tried";
  const tries = (n: number) => `${n} rejected ${n === 1 ? "try" : "tries"}`;
  if (cell.solved) {
    const first = cell.first_to_solve ? ", first to solve" : "";
    return `solved at minute ${cell.minute ?? "?"}` + (cell.rejected ? ` after ${tries(cell.rejected)}` : "") + first;
  }
  const parts: string[] = [];
  if (cell.rejected) parts.push(tries(cell.rejected));
  if (cell.pending) parts.push(`${cell.pending} pending (frozen)`);
  return parts.length ? parts.join(", ") : "not tried";
}

const STATE_WORDS: Record<ContestState, string> = {
  scheduled: "Scheduled",
  running: "Running",
  frozen: "Running (board frozen)",
  ended: "Ended",
  finalised: "Finalised",
};

export const stateText = (state: ContestState): string => STATE_WORDS[state] ?? state;

/** "2 h 05 min 09 s", "4 min 02 s", "12 s", or "1 d 3 h" when more than a day. */
export function duration(ms: number): string {
  const total = Math.max(0, Math.floor(ms / 1000));
  const d = Math.floor(total / 86400);
  const h = Math.floor((total % 86400) / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const two = (n: number) => String(n).padStart(2, "0");
  if (d > 0) return `${d} d ${h} h`;
  if (h > 0) return `${h} h ${two(m)} min ${two(s)} s`;
  if (m > 0) return `${m} min ${two(s)} s`;
  return `${s} s`;
}

/** What the countdown says at `now` (ms since the epoch): the next moment that matters, by the contest's times
 * (the server's `state` says what it decided; the times say what comes next). */
export function countdown(contest: Pick<Contest, "starts_at" | "ends_at" | "freeze_at" | "finalised_at">, now: number): string {
  const start = Date.parse(contest.starts_at);
  const end = Date.parse(contest.ends_at);
  const freeze = contest.freeze_at ? Date.parse(contest.freeze_at) : null;
  if (contest.finalised_at !== null) return "Finished: the results are final.";
  if (now < start) return `Starts in ${duration(start - now)}`;
  if (now < end) {
    if (freeze !== null && now < freeze) return `Ends in ${duration(end - now)} (board freezes in ${duration(freeze - now)})`;
    return `Ends in ${duration(end - now)}`;
  }
  return "Ended: waiting for the results to be finalised.";
}

/** The editor's language for a sandbox language id (GET /languages). */
export function editorLanguage(id: string): "python" | "javascript" | "cpp" | "text" {
  if (id === "python") return "python";
  if (id === "javascript") return "javascript";
  if (id === "c" || id === "cpp") return "cpp";
  return "text";
}

// --- following a contest live --------------------------------------------------------------------

/** What `followContest` uses of the Socket.IO connection (`LiveConnection`; tests pass a stand-in). */
export interface LiveLike {
  readonly connected: boolean;
  on<T>(event: string, handler: (data: T) => void): () => void;
  onConnect(hook: (reconnect: boolean) => void): () => void;
  emit(event: string, data: unknown): Promise<unknown>;
}

export interface Follow {
  /** The standings changed (the feed holds them). */
  changed: (feed: StandingsFeed) => void;
  /** The subscribe was refused (shown as its message), or null once it succeeded. */
  failed: (message: string | null) => void;
}

/**
 * Subscribes to a contest's live standings (`contest:subscribe`, again at every reconnect: the server forgets
 * a connection's rooms), feeds the answer and every `leaderboard:update` / `contest:downgraded` into `feed`,
 * and unsubscribes when the returned function is called.
 */
export function followContest(live: LiveLike, feed: StandingsFeed, follow: Follow): () => void {
  let stopped = false;
  const contest_id = feed.contestId;
  const subscribe = (): void => {
    feed.subscribeSent();
    live
      .emit("contest:subscribe", { contest_id })
      .then((answer) => {
        if (stopped) return;
        follow.failed(null);
        if (feed.subscribed((answer as { standings: Standings }).standings)) follow.changed(feed);
      })
      .catch((error: unknown) => {
        if (!stopped) follow.failed(messageOf(error));
      });
  };
  const offUpdate = live.on<Standings>("leaderboard:update", (standings) => {
    if (!stopped && feed.push(standings)) follow.changed(feed);
  });
  const offDowngraded = live.on<{ contest_id: string; standings: Standings }>("contest:downgraded", (data) => {
    if (!stopped && data.contest_id === contest_id && feed.push(data.standings)) follow.changed(feed);
  });
  const offConnect = live.onConnect(() => subscribe());
  if (live.connected) subscribe();
  return () => {
    stopped = true;
    offUpdate();
    offDowngraded();
    offConnect();
    if (live.connected) live.emit("contest:unsubscribe", { contest_id }).catch(() => {});
  };
}

/**
 * The caller's submissions to one contest, kept fresh while any waits for the judge: the server pushes the
 * contest's standings after every verdict, so a push (`poke`) reads them again when one is pending, and a slow
 * poll covers a verdict that moved nothing on the board. One read at a time; asked again meanwhile, it reads
 * once more after.
 */
export class SubmissionsWatch {
  items: Submission[] = [];
  private reading: Promise<void> | null = null;
  private again = false;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private stopped = false;

  constructor(
    private readonly load: () => Promise<Submission[]>,
    private readonly changed: (items: Submission[]) => void,
    private readonly failed: (message: string | null) => void,
    private readonly pollMs = 4000,
  ) {}

  get pending(): boolean {
    return this.items.some((s) => s.verdict === null && !s.disqualified);
  }

  /** Reads the list now (or once more after the read in flight). */
  refresh(): Promise<void> {
    if (this.reading !== null) {
      this.again = true;
      return this.reading;
    }
    this.reading = this.read().finally(() => {
      this.reading = null;
      if (this.again && !this.stopped) {
        this.again = false;
        void this.refresh();
      }
    });
    return this.reading;
  }

  /** The contest's standings were pushed: a verdict may have landed. */
  poke(): void {
    if (this.pending) void this.refresh();
  }

  /** A submission just made here, shown at once (newest first) until the next read. */
  add(submission: Submission): void {
    this.items = [submission, ...this.items.filter((s) => s.id !== submission.id)];
    this.changed(this.items);
    this.schedule();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  private async read(): Promise<void> {
    try {
      const items = await this.load();
      if (this.stopped) return;
      this.items = items;
      this.failed(null);
      this.changed(items);
    } catch (error) {
      if (!this.stopped) this.failed(messageOf(error));
    }
    this.schedule();
  }

  private schedule(): void {
    if (this.stopped || this.timer !== null || !this.pending) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.pending) void this.refresh();
    }, this.pollMs);
  }
}

// --- drafts --------------------------------------------------------------------------------------

export interface Draft {
  language: string;
  source: string;
}

const draftKey = (contestId: string, problemId: string): string => `studyhall.draft.${contestId}.${problemId}`;

/** The code typed for a problem in this tab (sessionStorage: kept across reloads, gone with the tab). */
export function readDraft(contestId: string, problemId: string, storage: Storage | null = sessionStore()): Draft | null {
  try {
    const raw = storage?.getItem(draftKey(contestId, problemId));
    if (!raw) return null;
    const value = JSON.parse(raw) as Partial<Draft>;
    return typeof value.language === "string" && typeof value.source === "string"
      ? { language: value.language, source: value.source }
      : null;
  } catch {
    return null;
  }
}

export function writeDraft(contestId: string, problemId: string, draft: Draft, storage: Storage | null = sessionStore()): void {
  try {
    if (draft.source === "") storage?.removeItem(draftKey(contestId, problemId));
    else storage?.setItem(draftKey(contestId, problemId), JSON.stringify(draft));
  } catch {
    // storage full or disabled: the draft lives in the page only
  }
}

function sessionStore(): Storage | null {
  try {
    return typeof sessionStorage === "undefined" ? null : sessionStorage;
  } catch {
    return null;
  }
}
