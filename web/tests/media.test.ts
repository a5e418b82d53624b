import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import type { ApiClient } from "../src/lib/api";
import { followJob, PlaybackToken, RENEW_EVERY_MS, stageLabel, uploadMessage, type Job } from "../src/lib/media";

const job = (over: Partial<Job> = {}): Job => ({
  id: "j1",
  kind: "lecture_video",
  state: "running",
  progress: 0.1,
  stage: "transcode",
  error: null,
  result: null,
  attempts: 1,
  created_at: "2026-01-03T10:00:00Z",
  started_at: "2026-01-03T10:00:01Z",
  finished_at: null,
  ...over,
});

/** A stand-in for the Socket.IO connection: `push` delivers an event to the subscribed handlers. */
function fakeLive() {
  const handlers = new Map<string, Set<(data: never) => void>>();
  return {
    on<T>(event: string, handler: (data: T) => void): () => void {
      const set = handlers.get(event) ?? new Set();
      set.add(handler as (data: never) => void);
      handlers.set(event, set);
      return () => set.delete(handler as (data: never) => void);
    },
    push(event: string, data: unknown): void {
      for (const h of handlers.get(event) ?? []) h(data as never);
    },
    count: (event: string) => handlers.get(event)?.size ?? 0,
  };
}

describe("followJob", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it("passes on its job's live progress, not other jobs', and stops at the end", () => {
    const live = fakeLive();
    const api = { get: vi.fn() } as unknown as ApiClient;
    const seen: Job[] = [];
    followJob(api, live, job(), (j) => seen.push(j));
    live.push("job:progress", job({ progress: 0.5 }));
    live.push("job:progress", job({ id: "other", progress: 0.9 }));
    live.push("job:progress", job({ state: "succeeded", progress: 1, stage: "done" }));
    live.push("job:progress", job({ progress: 0.6 })); // late, after the end
    expect(seen.map((j) => [j.state, j.progress])).toEqual([
      ["running", 0.5],
      ["succeeded", 1],
    ]);
    expect(live.count("job:progress")).toBe(0);
  });

  it("asks GET /jobs/{id} while no event comes (the socket may be reconnecting), until stopped", async () => {
    const live = fakeLive();
    const get = vi.fn().mockResolvedValue(job({ state: "failed", error: "not a video" }));
    const api = { get } as unknown as ApiClient;
    const seen: Job[] = [];
    followJob(api, live, job(), (j) => seen.push(j), 1000);
    await vi.advanceTimersByTimeAsync(1000);
    expect(get).toHaveBeenCalledWith("/jobs/j1");
    expect(seen.at(-1)?.error).toBe("not a video");
    await vi.advanceTimersByTimeAsync(5000);
    expect(get).toHaveBeenCalledTimes(1); // ended: no more polls
  });
});

describe("uploadMessage", () => {
  const response = (status: number, body: string) => ({ getStatus: () => status, getBody: () => body });

  it("is the server's message when it sent one", () => {
    const body = JSON.stringify({ error: { code: "too_large", message: "the upload is over the 2 GiB limit" } });
    expect(uploadMessage({ message: "tus: ...", originalResponse: response(413, body) })).toBe(
      "the upload is over the 2 GiB limit",
    );
  });

  it("names the status of an answer without one, and a dropped connection as such", () => {
    expect(uploadMessage({ message: "tus: ...", originalResponse: response(502, "<html>") })).toBe(
      "The upload was refused (HTTP 502).",
    );
    expect(uploadMessage({ message: "tus: failed to upload chunk", originalResponse: null })).toMatch(/resume/);
  });
});

describe("stageLabel", () => {
  it("says what the job is doing", () => {
    expect(stageLabel(job({ state: "queued", stage: null }))).toBe("Waiting for a worker");
    expect(stageLabel(job())).toBe("Transcoding");
    expect(stageLabel(job({ stage: "poster" }))).toBe("Making the poster");
  });
});

describe("PlaybackToken", () => {
  const MASTER = "http://127.0.0.1:8080/api/v1/media/j1/master.m3u8?token=u1.100.old";
  const opened = (token: PlaybackToken, url: string): string[] => {
    const calls: string[] = [];
    token.xhrSetup({ open: (_m: string, u: string) => calls.push(u) } as unknown as XMLHttpRequest, url);
    return calls;
  };

  it("sends every request of a signed URL with the current token, and leaves other URLs alone", () => {
    const token = new PlaybackToken(MASTER, () => Promise.resolve(null));
    token.token = "u1.200.new";
    expect(opened(token, "http://127.0.0.1:8080/api/v1/media/j1/360p/segment_00001.ts?token=u1.100.old")).toEqual([
      "http://127.0.0.1:8080/api/v1/media/j1/360p/segment_00001.ts?token=u1.200.new",
    ]);
    expect(opened(token, "https://cdn.example.com/x/seg1.ts")).toEqual([]); // hls.js opens it as it is
    const elsewhere = new PlaybackToken("https://cdn.example.com/x/index.m3u8", () => Promise.resolve(null));
    expect(elsewhere.token).toBeNull();
    expect(opened(elsewhere, "https://cdn.example.com/x/seg1.ts?token=theirs")).toEqual([]);
  });

  it("renews a refused token once per 30 s, restarting hls.js only when it had given up", async () => {
    let now = 1_000_000;
    const renew = vi.fn().mockResolvedValue("http://127.0.0.1:8080/api/v1/media/j1/master.m3u8?token=u1.300.fresh");
    const token = new PlaybackToken(MASTER, renew, () => now);
    const restart = vi.fn();
    expect(token.refused({ fatal: false, response: { code: 404 } }, restart)).toBe(false); // not a refusal
    expect(token.refused({ fatal: false, response: { code: 403 } }, restart)).toBe(true);
    await Promise.resolve();
    await Promise.resolve();
    expect(token.token).toBe("u1.300.fresh");
    expect(restart).not.toHaveBeenCalled(); // hls.js retries the segment itself
    // Refused again right after a renewal: not renewed again (the player shows the error).
    now += 1000;
    expect(token.refused({ fatal: true, response: { code: 403 } }, restart)).toBe(false);
    expect(renew).toHaveBeenCalledTimes(1);
    now += RENEW_EVERY_MS;
    expect(token.refused({ fatal: true, response: { code: 403 } }, restart)).toBe(true);
    await Promise.resolve();
    await Promise.resolve();
    expect(restart).toHaveBeenCalledTimes(1);
  });

  it("keeps the token when the lecture can no longer be played", async () => {
    const token = new PlaybackToken(MASTER, () => Promise.resolve(null));
    expect(token.refused({ fatal: true, response: { code: 403 } }, () => {})).toBe(true);
    await Promise.resolve();
    expect(token.token).toBe("u1.100.old");
  });
});
