/** The course's gradebook (core_api/grading/) and grade sheets applied by a job (core_api/grading/bulk.py). */
import type { ApiClient } from "./api";
import type { Job } from "./media";

export interface GradeColumn {
  kind: "assignment" | "quiz";
  id: string;
  title: string;
  max_points: number;
}

export interface GradeRow {
  user_id: string;
  display_name: string;
  email: string;
  scores: (number | null)[];
  total: number;
}

export interface Gradebook {
  course_id: string;
  columns: GradeColumn[];
  rows: GradeRow[];
  max_total: number;
}

const path = encodeURIComponent;

export const getGradebook = (api: ApiClient, courseId: string): Promise<Gradebook> =>
  api.get<Gradebook>(`/courses/${path(courseId)}/gradebook`);

export const gradebookCsv = (api: ApiClient, courseId: string): Promise<Blob> =>
  api.request<Blob>("GET", `/courses/${path(courseId)}/gradebook.csv`, { blob: true });

export type SheetMode = "all_or_nothing" | "valid_rows";

export const startGradeSheet = (api: ApiClient, courseId: string, uploadId: string, mode: SheetMode): Promise<Job> =>
  api.request<Job>("POST", `/courses/${path(courseId)}/grade-uploads`, { body: { upload_id: uploadId, mode } });

/** The finished job's per-row result file. */
export const sheetResults = (api: ApiClient, job: Job): Promise<Blob> =>
  api.request<Blob>("GET", String(job.result?.results ?? "").replace(/^\/api\/v1/, ""), { blob: true });

/** "7.5 / 10", or "—" when nothing is graded yet. */
export function scoreText(score: number | null, max: number): string {
  return score === null ? "—" : `${Math.round(score * 100) / 100} / ${max}`;
}
