import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import type { ApiClient } from "../src/lib/api";
import { followJob, stageLabel, uploadMessage, type Job } from "../src/lib/media";

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
