/**
 * Lecture videos: a resumable upload with the official `tus-js-client` (tus 1.0 at /api/v1/uploads), the job
 * that turns it into the lecture's HLS ladder, and that job's progress (live `job:progress`, with
 * `GET /jobs/{id}` as the fallback while the socket is away). docs/media.md describes the server side.
 *
 * tus-js-client is imported on demand (its own chunk): only instructors uploading a video fetch it.
 */
import type { ApiClient } from "./api";
import { ApiError } from "./errors";
import type { LiveConnection } from "./live";

export type JobState = "queued" | "running" | "succeeded" | "failed" | "cancelled";

export interface Job {
  id: string;
  kind: string;
  state: JobState;
  /** 0 to 1. */
  progress: number;
  stage: string | null;
  error: string | null;
  result: Record<string, unknown> | null;
  attempts: number;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
}

export const ENDED: readonly JobState[] = ["succeeded", "failed", "cancelled"];

const path = encodeURIComponent;

export const startLectureVideo = (api: ApiClient, lectureId: string, uploadId: string): Promise<Job> =>
  api.post(`/lectures/${path(lectureId)}/media`, { upload_id: uploadId });
export const getJob = (api: ApiClient, id: string): Promise<Job> => api.get(`/jobs/${path(id)}`);
export const cancelJob = (api: ApiClient, id: string): Promise<Job> => api.request("DELETE", `/jobs/${path(id)}`);

/** A live session's recording in a course, waiting for the course's staff to publish it (docs/live.md). */
export interface LectureDraft {
  id: string;
  course_id: string;
  title: string;
  duration_s: number;
  live_session_id: string | null;
  created_by: string | null;
  created_at: string;
  state: "draft" | "publishing" | "published";
  job_id: string | null;
  lecture_id: string | null;
}

export const listLectureDrafts = (api: ApiClient, courseId: string): Promise<{ items: LectureDraft[] }> =>
  api.get(`/courses/${path(courseId)}/lecture-drafts`);
export const publishLectureDraft = (api: ApiClient, id: string, title: string): Promise<Job> =>
  api.post(`/lecture-drafts/${path(id)}/publish`, { title });
export const discardLectureDraft = (api: ApiClient, id: string): Promise<unknown> =>
  api.request("DELETE", `/lecture-drafts/${path(id)}`);

/** An upload under way: `done` resolves with the upload's id once every byte is stored. */
export interface UploadHandle {
  done: Promise<string>;
  /** Stops sending (what arrived stays: the same file picked again resumes); `terminate` deletes it too. */
  abort(terminate?: boolean): Promise<void>;
}

/** What a failed tus request carries: the server's `{error: {message}}` if it sent one. */
interface TusFailure {
  message: string;
  originalResponse?: { getStatus(): number; getBody(): string } | null;
}

function statusOf(error: TusFailure): number {
  return error.originalResponse?.getStatus() ?? 0;
}

/** A tus client's error as the person uploading should read it. */
export function uploadMessage(error: TusFailure): string {
  const res = error.originalResponse;
  if (!res) return "The upload was interrupted: check your connection, then pick the file again to resume.";
  try {
    const body = JSON.parse(res.getBody()) as { error?: { message?: unknown } };
    if (typeof body.error?.message === "string") return body.error.message;
  } catch {
    // not JSON: the status says enough
  }
  return `The upload was refused (HTTP ${res.getStatus()}).`;
}

/**
 * Uploads `file` to /api/v1/uploads with tus: in 8 MiB requests, retried after a dropped connection, resumed
 * from where the server says it stopped (HEAD) when the same file is picked again, even after a reload.
 * Every request carries the current access token; one refused as expired refreshes it and is retried.
 */
export async function uploadFile(
  api: ApiClient,
  file: File,
  onProgress: (sent: number, total: number) => void,
): Promise<UploadHandle> {
  const { Upload } = await import("tus-js-client");
  if (api.accessToken === null && !(await api.refresh(null))) throw ApiError.signedOut();
  let sentWith: string | null = null;
  let upload!: InstanceType<typeof Upload>;
  const done = new Promise<string>((resolve, reject) => {
    upload = new Upload(file, {
      endpoint: "/api/v1/uploads",
      chunkSize: 8 * 1024 * 1024,
      retryDelays: [0, 1000, 3000, 5000, 10000],
      metadata: { filename: file.name, filetype: file.type || "application/octet-stream" },
      removeFingerprintOnSuccess: true,
      onBeforeRequest(req) {
        sentWith = api.accessToken;
        if (sentWith !== null) req.setHeader("Authorization", `Bearer ${sentWith}`);
      },
      onShouldRetry(error, attempt) {
        const status = statusOf(error);
        if (status === 401 && attempt < 2) {
          void api.refresh(sentWith); // the retry after a delay sends the new token
          return true;
        }
        // Not the server's "no": a dropped connection, a busy node, another tab's PATCH holding the upload.
        return status === 0 || status >= 500 || status === 409 || status === 423;
      },
      onProgress,
      onSuccess() {
        const url = upload.url ?? "";
        resolve(url.slice(url.lastIndexOf("/") + 1));
      },
      onError(error) {
        reject(new ApiError(statusOf(error), "upload_failed", uploadMessage(error)));
      },
    });
  });
  const previous = await upload.findPreviousUploads();
  if (previous.length > 0) upload.resumeFromPreviousUpload(previous[0]!);
  upload.start();
  return { done, abort: (terminate = false) => upload.abort(terminate) };
}

/**
 * Follows a job until it ends: `onUpdate` with each newer view of it (live `job:progress`, and `GET /jobs/{id}`
 * every few seconds in case the socket is reconnecting). Returns a function that stops following.
 */
export function followJob(
  api: ApiClient,
  live: Pick<LiveConnection, "on">,
  job: Job,
  onUpdate: (job: Job) => void,
  pollMs = 3000,
): () => void {
  let last = job;
  let stopped = false;
  const seen = (next: Job): void => {
    if (stopped || next.id !== job.id) return;
    // Progress only moves forward within a state; an ended job stays ended.
    if (ENDED.includes(last.state) && !ENDED.includes(next.state)) return;
    last = next;
    onUpdate(next);
    if (ENDED.includes(next.state)) stop();
  };
  const off = live.on<Job>("job:progress", seen);
  const timer = setInterval(() => {
    getJob(api, job.id).then(seen, () => {
      // the next poll or event will tell
    });
  }, pollMs);
  function stop(): void {
    stopped = true;
    off();
    clearInterval(timer);
  }
  return stop;
}

/** "Transcoding 37%"-style words for a job's stage. */
export function stageLabel(job: Job): string {
  const names: Record<string, string> = {
    probe: "Checking the video",
    transcode: "Transcoding",
    poster: "Making the poster",
  };
  if (job.state === "queued") return "Waiting for a worker";
  return names[job.stage ?? ""] ?? "Processing";
}

/** What this module needs of an hls.js error event. */
export interface PlayerError {
  fatal: boolean;
  response?: { code?: number } | null;
}

export const RENEW_EVERY_MS = 30_000;

/**
 * Keeps the token of a signed playback URL (docs/media.md, "Playback and the paywall") fresh for hls.js: give
 * `xhrSetup` to hls.js's config, which sends every playlist and segment request with the current token; pass
 * each hls.js error to `refused`. When the server refuses the token (403: it expired during a long pause, or
 * access changed) `renew` is asked for a fresh URL of the lecture (at most every 30 s) and the next requests
 * carry its token; hls.js retries the segment on its own, and `restart` is called when it had given up.
 * A URL without a token (a video hosted elsewhere) is left alone.
 */
export class PlaybackToken {
  token: string | null;
  private renewedAt = -Infinity;

  constructor(
    url: string,
    private readonly renew: () => Promise<string | null>,
    private readonly now: () => number = () => Date.now(),
  ) {
    this.token = tokenOf(url);
  }

  /** hls.js's `xhrSetup`: opens the request itself when the URL carries a token, with the current one. */
  readonly xhrSetup = (xhr: XMLHttpRequest, url: string): void => {
    if (this.token === null) return;
    const target = new URL(url, base());
    if (!target.searchParams.has("token")) return;
    target.searchParams.set("token", this.token);
    xhr.open("GET", target.toString(), true);
  };

  /** True when the error is a refused token being renewed (the player shows no error for it). */
  refused(error: PlayerError, restart: () => void): boolean {
    if (this.token === null || error.response?.code !== 403) return false;
    if (this.now() - this.renewedAt < RENEW_EVERY_MS) return false; // renewed just now and still refused
    this.renewedAt = this.now();
    void this.renew().then(
      (fresh) => {
        const token = fresh === null ? null : tokenOf(fresh);
        if (token === null) return;
        this.token = token;
        if (error.fatal) restart();
      },
      () => {
        // the next refusal (after RENEW_EVERY_MS) tries again
      },
    );
    return true;
  }
}

function tokenOf(url: string): string | null {
  try {
    return new URL(url, base()).searchParams.get("token");
  } catch {
    return null;
  }
}

function base(): string {
  return globalThis.location?.href ?? "http://localhost/";
}
