import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import {
  cellLabel,
  cellText,
  countdown,
  duration,
  followContest,
  readDraft,
  writeDraft,
  StandingsFeed,
  SubmissionsWatch,
  verdictText,
  type LiveLike,
  type PersonRow,
  type Standings,
  type Submission,
} from "../src/lib/contests";

const person = (user_id: string, rank: number, community_id = "c1"): PersonRow => ({
  rank,
  user_id,
  display_name: user_id.toUpperCase(),
  community_id,
  community_name: "Larks",
  score: 0,
  solved: 0,
  penalty: 0,
  problems: [],
});

const standings = (people: PersonRow[], over: Partial<Standings> = {}): Standings => ({
  contest_id: "k1",
  view: "public",
  frozen: false,
  scoring: "icpc",
  people,
  communities: [],
  ...over,
});

const submission = (id: string, verdict: string | null): Submission => ({
  id,
  contest_id: "k1",
  problem_id: "p1",
  user_id: "u1",
  community_id: "c1",
  language: "python",
  submitted_at: "2026-01-03T10:00:00Z",
  minute: 0,
  verdict,
  passed: verdict === null ? null : 2,
  total: verdict === null ? null : 2,
  judged_at: null,
  disqualified: false,
});

describe("StandingsFeed", () => {
  it("takes the subscribe answer, then every push of its contest (not of others)", () => {
    const feed = new StandingsFeed("k1");
    feed.subscribeSent();
    expect(feed.subscribed(standings([person("a", 1)]))).toBe(true);
    expect(feed.push(standings([person("b", 1)], { contest_id: "other" }))).toBe(false);
    expect(feed.current?.people.map((p) => p.user_id)).toEqual(["a"]);
    expect(feed.push(standings([person("b", 1), person("a", 2)]))).toBe(true);
    expect(feed.current?.people.map((p) => p.user_id)).toEqual(["b", "a"]);
  });

  it("keeps a push heard while the subscribe was in flight over the answer that comes after it", () => {
    const feed = new StandingsFeed("k1");
    feed.subscribeSent();
    feed.push(standings([person("a", 1), person("b", 2)]));
    expect(feed.subscribed(standings([person("a", 1)]))).toBe(false);
    expect(feed.current?.people).toHaveLength(2);
    // The next subscribe (a reconnect) starts afresh.
    feed.subscribeSent();
    expect(feed.subscribed(standings([person("b", 1)]))).toBe(true);
    expect(feed.current?.people.map((p) => p.user_id)).toEqual(["b"]);
  });

  it("says which rows moved: up, down, new; one person's rows per community apart", () => {
    const feed = new StandingsFeed("k1");
    feed.push(standings([person("a", 1), person("b", 2)]));
    expect(feed.movedPeople.size).toBe(0); // nothing to compare the first with
    feed.push(standings([person("b", 1), person("a", 2), person("b", 3, "c2")]));
    expect(Object.fromEntries(feed.movedPeople)).toEqual({ "b:c1": "up", "a:c1": "down", "b:c2": "new" });
    feed.push(standings([person("b", 1), person("a", 2), person("b", 3, "c2")]));
    expect(feed.movedPeople.size).toBe(0);
  });

  it("tracks communities' moves too", () => {
    const feed = new StandingsFeed("k1");
    const row = (community_id: string, rank: number) => ({ rank, community_id, name: community_id, score: 0, solved: 0, penalty: 0 });
    feed.push(standings([], { communities: [row("x", 1), row("y", 2)] }));
    feed.push(standings([], { communities: [row("y", 1), row("x", 2)] }));
    expect(Object.fromEntries(feed.movedCommunities)).toEqual({ y: "up", x: "down" });
  });
});

class FakeLive implements LiveLike {
  connected = true;
  handlers = new Map<string, (data: never) => void>();
  hooks = new Set<(reconnect: boolean) => void>();
  emitted: [string, unknown][] = [];
  answers: ((value: unknown) => void)[] = [];
  on<T>(event: string, handler: (data: T) => void): () => void {
    this.handlers.set(event, handler as (data: never) => void);
    return () => this.handlers.delete(event);
  }
  onConnect(hook: (reconnect: boolean) => void): () => void {
    this.hooks.add(hook);
    return () => this.hooks.delete(hook);
  }
  emit(event: string, data: unknown): Promise<unknown> {
    this.emitted.push([event, data]);
    if (event !== "contest:subscribe") return Promise.resolve({ ok: true });
    return new Promise((resolve) => this.answers.push(resolve));
  }
  hear(event: string, data: unknown): void {
    this.handlers.get(event)?.(data as never);
  }
}

describe("followContest", () => {
  it("subscribes now and at every reconnect, feeds pushes in, and unsubscribes at the end", async () => {
    const live = new FakeLive();
    const feed = new StandingsFeed("k1");
    const seen: string[][] = [];
    const stop = followContest(live, feed, { changed: (f) => seen.push(f.current!.people.map((p) => p.user_id)), failed: () => {} });
    expect(live.emitted).toEqual([["contest:subscribe", { contest_id: "k1" }]]);
    live.answers.shift()!({ ok: true, standings: standings([person("a", 1)]) });
    await Promise.resolve();
    live.hear("leaderboard:update", standings([person("b", 1), person("a", 2)]));
    live.hear("contest:downgraded", { contest_id: "k1", view: "public", standings: standings([person("c", 1)]) });
    expect(seen).toEqual([["a"], ["b", "a"], ["c"]]);
    for (const hook of live.hooks) hook(true);
    expect(live.emitted.filter(([e]) => e === "contest:subscribe")).toHaveLength(2);
    stop();
    expect(live.emitted.at(-1)).toEqual(["contest:unsubscribe", { contest_id: "k1" }]);
    live.hear("leaderboard:update", standings([person("d", 1)]));
    expect(seen).toHaveLength(3);
    expect(live.hooks.size).toBe(0);
  });

  it("tells a refused subscribe as its message", async () => {
    const live = new FakeLive();
    live.emit = () => Promise.reject(new Error("contest not found"));
    const failed: (string | null)[] = [];
    followContest(live, new StandingsFeed("k1"), { changed: () => {}, failed: (m) => failed.push(m) });
    await new Promise((r) => setTimeout(r, 0));
    expect(failed).toEqual(["Something went wrong: contest not found"]);
  });

  it("waits for the connection before subscribing", () => {
    const live = new FakeLive();
    live.connected = false;
    followContest(live, new StandingsFeed("k1"), { changed: () => {}, failed: () => {} });
    expect(live.emitted).toEqual([]);
    for (const hook of live.hooks) hook(false);
    expect(live.emitted).toHaveLength(1);
  });
});

describe("SubmissionsWatch", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it("reads again on a push only while a verdict is awaited, and polls slowly meanwhile", async () => {
    let answer = [submission("s1", null)];
    const load = vi.fn(async () => answer);
    const watch = new SubmissionsWatch(load, () => {}, () => {}, 4000);
    await watch.refresh();
    expect(watch.pending).toBe(true);
    watch.poke();
    await vi.advanceTimersByTimeAsync(0);
    expect(load).toHaveBeenCalledTimes(2);
    answer = [submission("s1", "accepted")];
    await vi.advanceTimersByTimeAsync(4000); // the poll brings the verdict
    expect(load).toHaveBeenCalledTimes(3);
    expect(watch.items[0]!.verdict).toBe("accepted");
    watch.poke(); // nothing pending: no read
    await vi.advanceTimersByTimeAsync(10_000);
    expect(load).toHaveBeenCalledTimes(3);
    watch.stop();
  });

  it("reads once more after a read in flight when asked meanwhile, and shows a new submission at once", async () => {
    let resolve: (items: Submission[]) => void = () => {};
    const load = vi.fn(() => new Promise<Submission[]>((r) => (resolve = r)));
    const shown: string[][] = [];
    const watch = new SubmissionsWatch(load, (items) => shown.push(items.map((s) => s.id)), () => {});
    void watch.refresh();
    void watch.refresh();
    void watch.refresh();
    expect(load).toHaveBeenCalledTimes(1);
    watch.add(submission("s2", null));
    resolve([submission("s2", null), submission("s1", "accepted")]);
    await vi.advanceTimersByTimeAsync(0);
    expect(load).toHaveBeenCalledTimes(2);
    expect(shown[0]).toEqual(["s2"]);
    expect(shown[1]).toEqual(["s2", "s1"]);
    watch.stop();
  });

  it("tells a failed read and clears it after the next", async () => {
    const load = vi.fn().mockRejectedValueOnce(new Error("offline")).mockResolvedValue([]);
    const errors: (string | null)[] = [];
    const watch = new SubmissionsWatch(load, () => {}, (m) => errors.push(m));
    await watch.refresh();
    await watch.refresh();
    expect(errors).toEqual(["Something went wrong: offline", null]);
  });
});

describe("words", () => {
  it("says verdicts with their tests", () => {
    expect(verdictText(submission("s", null))).toBe("Waiting for the judge…");
    expect(verdictText({ verdict: "wrong_answer", passed: 1, total: 2, disqualified: false })).toBe("Wrong answer (1/2 tests)");
    expect(verdictText({ verdict: "compile_error", passed: null, total: null, disqualified: false })).toBe("Compile error");
    expect(verdictText({ verdict: "accepted", passed: 2, total: 2, disqualified: true })).toBe("Disqualified");
  });

  it("writes standings cells as boards do, and reads them out in words", () => {
    const cell = { problem_id: "p", solved: true, minute: 34, rejected: 1, pending: 0, first_to_solve: true };
    expect(cellText(cell)).toBe("+1 34′");
    expect(cellLabel(cell)).toBe("solved at minute 34 after 1 rejected try, first to solve");
    expect(cellText({ ...cell, rejected: 0, first_to_solve: false })).toBe("+ 34′");
    expect(cellText({ ...cell, solved: false, minute: null, rejected: 2, pending: 1 })).toBe("−2 ?1");
    expect(cellLabel({ ...cell, solved: false, minute: null, rejected: 0, pending: 1 })).toBe("1 pending (frozen)");
    expect(cellText(undefined)).toBe("");
    expect(cellLabel(undefined)).toBe("not tried");
  });

  it("counts down to the start, the freeze and the end", () => {
    const contest = {
      starts_at: "2026-01-03T10:00:00Z",
      ends_at: "2026-01-03T15:00:00Z",
      freeze_at: "2026-01-03T14:00:00Z",
      finalised_at: null,
    };
    const at = (iso: string) => Date.parse(iso);
    expect(countdown(contest, at("2026-01-03T09:58:30Z"))).toBe("Starts in 1 min 30 s");
    expect(countdown(contest, at("2026-01-03T13:00:00Z"))).toBe("Ends in 2 h 00 min 00 s (board freezes in 1 h 00 min 00 s)");
    expect(countdown(contest, at("2026-01-03T14:59:55Z"))).toBe("Ends in 5 s");
    expect(countdown(contest, at("2026-01-03T15:00:00Z"))).toBe("Ended: waiting for the results to be finalised.");
    expect(countdown({ ...contest, finalised_at: "2026-01-03T15:01:00Z" }, at("2026-01-03T15:02:00Z"))).toBe(
      "Finished: the results are final.",
    );
    expect(duration(3 * 86_400_000 + 2 * 3_600_000)).toBe("3 d 2 h");
    expect(duration(-5)).toBe("0 s");
  });
});

describe("drafts", () => {
  const memory = (): Storage => {
    const map = new Map<string, string>();
    return {
      get length() {
        return map.size;
      },
      clear: () => map.clear(),
      getItem: (k) => map.get(k) ?? null,
      key: (i) => [...map.keys()][i] ?? null,
      removeItem: (k) => void map.delete(k),
      setItem: (k, v) => void map.set(k, v),
    };
  };

  it("keeps the code and language per problem, forgets an emptied one, and survives garbage", () => {
    const storage = memory();
    expect(readDraft("k1", "p1", storage)).toBeNull();
    writeDraft("k1", "p1", { language: "cpp", source: "int main() {}" }, storage);
    expect(readDraft("k1", "p1", storage)).toEqual({ language: "cpp", source: "int main() {}" });
    expect(readDraft("k1", "p2", storage)).toBeNull();
    writeDraft("k1", "p1", { language: "cpp", source: "" }, storage);
    expect(storage.length).toBe(0);
    storage.setItem("studyhall.draft.k1.p1", "{not json");
    expect(readDraft("k1", "p1", storage)).toBeNull();
    expect(readDraft("k1", "p1", null)).toBeNull();
  });
});
