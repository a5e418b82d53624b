/**
 * Courses, lectures, enrollments, progress, assignments and certificates: the REST calls the course screens
 * make (docs/api.md; shapes from /api/v1/openapi.json). Views call these and show an `ApiError`'s message
 * when one fails; nothing here keeps state.
 */
import type { ApiClient, Page } from "./api";
import { ApiError } from "./errors";

export interface Course {
  id: string;
  owner_id: string;
  title: string;
  description: string;
  /** `unpublished` and `archived`: out of the catalogue, no newcomers; learners enrolled keep them. */
  status: "draft" | "published" | "unpublished" | "archived";
  /** Normalised (trimmed, lower-case); null when none. */
  category: string | null;
  tags: string[];
  /** Courses a learner must complete before enrolling (the server answers 409 naming the missing ones). */
  prerequisites: CourseRef[];
  lecture_count: number;
  total_duration_s: number;
  /** The price in coins; null when the course is free. */
  price_coins: number | null;
  created_at: string;
  updated_at: string;
  published_at: string | null;
  archived_at: string | null;
  deleted_at: string | null;
}

export interface CourseRef {
  id: string;
  title: string;
}

/** The catalogue's filters: a category and tags (a course must carry every tag). */
export interface CourseFilter {
  category?: string;
  tags?: readonly string[];
}

/** A course's learner as its owner sees them (`GET /courses/{id}/learners`). */
export interface Learner {
  user_id: string;
  display_name: string;
  enrolled_at: string;
  completed_at: string | null;
  completed_lectures: number;
  total_lectures: number;
  percent: number;
  last_activity_at: string | null;
}

export interface LearnerProgress extends Learner {
  course_id: string;
  lectures: LectureProgress[];
}

/** One course to continue (`GET /me/continue`): the lecture to resume and where. */
export interface ContinueItem {
  course_id: string;
  course_title: string;
  lecture_id: string;
  lecture_title: string;
  lecture_position: number;
  position_s: number;
  duration_s: number;
  completed_lectures: number;
  total_lectures: number;
  percent: number;
  last_activity_at: string | null;
}

export interface Lecture {
  id: string;
  course_id: string;
  position: number;
  title: string;
  media_kind: "video" | "hls";
  /** Null when the course is priced and the caller has not bought it (`locked`). */
  media_url: string | null;
  duration_s: number;
  created_at: string;
  locked: boolean;
  locked_reason: string | null;
  /** When `media_url` stops working: set for a video studyhall serves (its URL is signed for this user). */
  media_url_expires_at?: string | null;
}

export interface Enrollment {
  id: string;
  course_id: string;
  course_title: string;
  user_id: string;
  display_name: string;
  enrolled_at: string;
  completed_at: string | null;
  completed_lectures: number;
  total_lectures: number;
  percent: number;
}

export interface LectureProgress {
  lecture_id: string;
  title: string;
  position: number;
  duration_s: number;
  position_s: number;
  watched_s: number;
  completed: boolean;
  updated_at: string | null;
}

export interface Certificate {
  id: string;
  code: string;
  user_id: string;
  course_id: string;
  course_title: string;
  issued_at: string;
  verification_url: string;
}

export interface CertificateCheck {
  code: string;
  valid: boolean;
  learner_name: string;
  course_title: string;
  issued_at: string;
  verification_url: string;
}

export interface ProgressSummary {
  course_id: string;
  completed_lectures: number;
  total_lectures: number;
  percent: number;
  completed_at: string | null;
  certificate: Certificate | null;
}

export interface CourseProgress extends ProgressSummary {
  lectures: LectureProgress[];
}

export interface ProgressUpdate {
  lecture: LectureProgress;
  course: ProgressSummary;
}

export interface Assignment {
  id: string;
  course_id: string;
  title: string;
  description: string;
  due_at: string;
  max_points: number;
  created_at: string;
}

export interface Submission {
  id: string;
  assignment_id: string;
  user_id: string;
  author_name: string;
  body: string;
  late: boolean;
  submitted_at: string;
  grade: number | null;
  max_points: number;
  feedback: string | null;
  graded_at: string | null;
  graded_by: string | null;
  files: SubmissionFile[];
}

/** A file attached to a submission: its author and the course's staff download it. */
export interface SubmissionFile {
  id: string;
  name: string;
  content_type: string;
  size: number;
  created_at: string;
  url: string;
}

export interface Wallet {
  balance: number;
}

export interface Purchase {
  course_id: string;
  coins_paid: number;
  balance: number;
  paid_before: boolean;
}

export interface LectureInput {
  title: string;
  media_kind: "video" | "hls";
  media_url: string;
  duration_s: number;
}

const path = encodeURIComponent;

export const listCourses = (
  api: ApiClient,
  cursor: string | null,
  mine = false,
  filter: CourseFilter = {},
): Promise<Page<Course>> =>
  api.get("/courses", {
    limit: 20,
    cursor,
    mine: mine || undefined,
    category: filter.category || undefined,
    tag: filter.tags?.length ? filter.tags : undefined,
  });
export const getCourse = (api: ApiClient, id: string): Promise<Course> => api.get(`/courses/${path(id)}`);
export const createCourse = (api: ApiClient, title: string, description: string): Promise<Course> =>
  api.post("/courses", { title, description });
export const updateCourse = (
  api: ApiClient,
  id: string,
  title: string,
  description: string,
  taxonomy?: { category: string; tags: readonly string[] },
): Promise<Course> =>
  api.request("PATCH", `/courses/${path(id)}`, {
    body: taxonomy
      ? { title, description, category: taxonomy.category.trim() || null, tags: taxonomy.tags }
      : { title, description },
  });
export const publishCourse = (api: ApiClient, id: string): Promise<Course> =>
  api.post(`/courses/${path(id)}/publish`);
export const unpublishCourse = (api: ApiClient, id: string): Promise<Course> =>
  api.post(`/courses/${path(id)}/unpublish`);
export const archiveCourse = (api: ApiClient, id: string): Promise<Course> =>
  api.post(`/courses/${path(id)}/archive`);
export const restoreCourse = (api: ApiClient, id: string): Promise<Course> =>
  api.post(`/courses/${path(id)}/restore`);
/** Soft delete; the server refuses (409) while learners are enrolled. */
export const deleteCourse = (api: ApiClient, id: string): Promise<void> =>
  api.request("DELETE", `/courses/${path(id)}`);
export const setPrerequisites = (api: ApiClient, id: string, courseIds: readonly string[]): Promise<Course> =>
  api.request("PUT", `/courses/${path(id)}/prerequisites`, { body: { course_ids: courseIds } });

/** "Python, Data  Science," → ["Python", "Data  Science"] (the server normalises each). */
export function parseTags(text: string): string[] {
  return text
    .split(",")
    .map((t) => t.trim())
    .filter((t) => t.length > 0);
}
export const setPrice = (api: ApiClient, id: string, coins: number): Promise<{ coins: number }> =>
  api.request("PUT", `/courses/${path(id)}/price`, { body: { coins } });

export const listLectures = async (api: ApiClient, courseId: string): Promise<Lecture[]> =>
  (await api.get<{ items: Lecture[] }>(`/courses/${path(courseId)}/lectures`)).items;
export const getLecture = (api: ApiClient, id: string): Promise<Lecture> => api.get(`/lectures/${path(id)}`);
export const addLecture = (api: ApiClient, courseId: string, lecture: LectureInput): Promise<Lecture> =>
  api.post(`/courses/${path(courseId)}/lectures`, lecture);
export const updateLecture = (api: ApiClient, id: string, change: Partial<LectureInput>): Promise<Lecture> =>
  api.request("PATCH", `/lectures/${path(id)}`, { body: change });
/** Moves a lecture to `position` (0 = first); the server shifts the others so positions stay 0..n-1. */
export const moveLecture = (api: ApiClient, id: string, position: number): Promise<Lecture> =>
  api.request("PATCH", `/lectures/${path(id)}`, { body: { position } });
export const deleteLecture = (api: ApiClient, id: string): Promise<void> =>
  api.request("DELETE", `/lectures/${path(id)}`);

export const enroll = (api: ApiClient, courseId: string): Promise<Enrollment> =>
  api.post(`/courses/${path(courseId)}/enroll`);
export const buy = (api: ApiClient, courseId: string): Promise<Purchase> => api.post(`/courses/${path(courseId)}/buy`);
export const wallet = (api: ApiClient): Promise<Wallet> => api.get("/me/wallet");
export const myEnrollments = (api: ApiClient, cursor: string | null): Promise<Page<Enrollment>> =>
  api.get("/me/enrollments", { limit: 20, cursor });
export const courseLearners = (api: ApiClient, courseId: string, cursor: string | null): Promise<Page<Learner>> =>
  api.get(`/courses/${path(courseId)}/learners`, { limit: 50, cursor });
export const learnerProgress = (api: ApiClient, courseId: string, userId: string): Promise<LearnerProgress> =>
  api.get(`/courses/${path(courseId)}/learners/${path(userId)}/progress`);
export const continueLearning = async (api: ApiClient, limit = 5): Promise<ContinueItem[]> =>
  (await api.get<{ items: ContinueItem[] }>("/me/continue", { limit })).items;

/** The player's URL for a lecture, opening at `positionS` (the player reads `?t=`). */
export function lectureLink(courseId: string, lectureId: string, positionS = 0): string {
  const base = `/courses/${path(courseId)}/lectures/${path(lectureId)}`;
  return positionS > 0 ? `${base}?t=${Math.floor(positionS)}` : base;
}

/** `?t=` of a lecture URL: seconds to start at, or null when absent or not a number. */
export function startParam(search: string): number | null {
  const raw = new URLSearchParams(search).get("t");
  if (raw === null || raw.trim() === "") return null;
  const seconds = Number(raw);
  return Number.isFinite(seconds) && seconds >= 0 ? seconds : null;
}

/** The caller's progress in a course, or null when they are not enrolled (the server answers 403). */
export async function courseProgress(api: ApiClient, courseId: string): Promise<CourseProgress | null> {
  try {
    return await api.get<CourseProgress>(`/courses/${path(courseId)}/progress`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 403) return null;
    throw error;
  }
}
export const reportProgress = (api: ApiClient, lectureId: string, positionS: number): Promise<ProgressUpdate> =>
  api.request("PUT", `/lectures/${path(lectureId)}/progress`, { body: { position_s: positionS } });

export const listAssignments = (api: ApiClient, courseId: string, cursor: string | null): Promise<Page<Assignment>> =>
  api.get(`/courses/${path(courseId)}/assignments`, { limit: 50, cursor });
export const getAssignment = (api: ApiClient, id: string): Promise<Assignment> =>
  api.get(`/assignments/${path(id)}`);
export const createAssignment = (
  api: ApiClient,
  courseId: string,
  assignment: { title: string; description: string; due_at: string; max_points: number },
): Promise<Assignment> => api.post(`/courses/${path(courseId)}/assignments`, assignment);
export const listSubmissions = (api: ApiClient, assignmentId: string, cursor: string | null): Promise<Page<Submission>> =>
  api.get(`/assignments/${path(assignmentId)}/submissions`, { limit: 50, cursor });
export const submitWork = (api: ApiClient, assignmentId: string, body: string): Promise<Submission> =>
  api.post(`/assignments/${path(assignmentId)}/submissions`, { body });
/** Attach a file to one's own submission (the bytes as the body, the name in the query). */
export const attachFile = (api: ApiClient, submissionId: string, file: File): Promise<SubmissionFile> =>
  api.request("POST", `/submissions/${path(submissionId)}/files`, { body: file, query: { name: file.name } });
export const downloadSubmissionFile = (api: ApiClient, fileId: string): Promise<Blob> =>
  api.request("GET", `/submission-files/${path(fileId)}`, { blob: true });
export const gradeSubmission = (
  api: ApiClient,
  submissionId: string,
  grade: number,
  feedback: string,
): Promise<Submission> =>
  api.request("PUT", `/submissions/${path(submissionId)}/grade`, { body: { grade, feedback } });

export const myCertificates = (api: ApiClient, cursor: string | null): Promise<Page<Certificate>> =>
  api.get("/me/certificates", { limit: 20, cursor });
/** Public: anyone (signed in or not) may verify a certificate by its code. */
export const verifyCertificate = (api: ApiClient, code: string): Promise<CertificateCheck> =>
  api.request("GET", `/certificates/${path(code)}`, { auth: false });

/** The app's own page for a certificate (the server's `verification_url` is the API's JSON). */
export const certificatePage = (code: string): string => `/certificates/${path(code)}`;

/** "1 h 05 min", "4 min 10 s", "12 s": a duration for people. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds)); // as players show time: 6.6 s is "0:06"
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = s % 60;
  if (h > 0) return `${h} h ${String(m).padStart(2, "0")} min`;
  if (m > 0) return rest ? `${m} min ${rest} s` : `${m} min`;
  return `${rest} s`;
}
