/** Quizzes (core_api/grading/): the list, attempts (start, save, submit), and the owner's statistics. */
import type { ApiClient, Page } from "./api";

export type QuestionKind = "single" | "multiple" | "true_false" | "short" | "numeric" | "code";

export interface Quiz {
  id: string;
  course_id: string;
  title: string;
  description: string;
  time_limit_s: number | null;
  attempts_allowed: number;
  opens_at: string | null;
  closes_at: string | null;
  results_visible: boolean;
  question_count: number;
  max_points: number;
}

export interface QuestionView {
  id: string;
  kind: QuestionKind;
  prompt: string;
  points: number;
  options: { id: string; text: string }[] | null;
  language: string | null;
  starter: string | null;
}

export interface QuestionResult {
  question_id: string;
  answered: boolean;
  correct: boolean;
  points: number;
  max_points: number;
  verdict?: string | null;
}

export interface Attempt {
  id: string;
  quiz_id: string;
  number: number;
  state: "in_progress" | "submitted";
  deadline_at: string | null;
  submitted_at: string | null;
  finished_by: "learner" | "deadline" | null;
  questions: QuestionView[];
  answers: Record<string, unknown>;
  score: number | null;
  max_points: number;
  results: QuestionResult[] | null;
}

export interface QuestionStat {
  question_id: string;
  kind: QuestionKind;
  prompt: string;
  points: number;
  answered: number;
  correct: number;
  correct_rate: number | null;
}

export interface QuizStats {
  quiz_id: string;
  attempts: number;
  learners: number;
  questions: QuestionStat[];
}

const p = encodeURIComponent;

export const listQuizzes = async (api: ApiClient, courseId: string): Promise<Quiz[]> =>
  (await api.get<Page<Quiz>>(`/courses/${p(courseId)}/quizzes`)).items;
export const getQuiz = (api: ApiClient, id: string): Promise<Quiz> => api.get<Quiz>(`/quizzes/${p(id)}`);
export const myAttempts = async (api: ApiClient, quizId: string): Promise<Attempt[]> =>
  (await api.get<Page<Attempt>>(`/quizzes/${p(quizId)}/attempts`)).items;
export const getAttempt = (api: ApiClient, id: string): Promise<Attempt> => api.get<Attempt>(`/attempts/${p(id)}`);
export const startAttempt = (api: ApiClient, quizId: string): Promise<Attempt> =>
  api.request<Attempt>("POST", `/quizzes/${p(quizId)}/attempts`);
export const saveAnswers = (api: ApiClient, id: string, answers: Record<string, unknown>): Promise<Attempt> =>
  api.request<Attempt>("PUT", `/attempts/${p(id)}/answers`, { body: { answers } });
export const submitAttempt = (api: ApiClient, id: string, answers: Record<string, unknown>): Promise<Attempt> =>
  api.request<Attempt>("POST", `/attempts/${p(id)}/submit`, { body: { answers } });
export const quizStats = (api: ApiClient, id: string): Promise<QuizStats> =>
  api.get<QuizStats>(`/quizzes/${p(id)}/stats`);

/** The answers as the server takes them: numbers from numeric fields, empty ones left out. */
export function answersOut(questions: QuestionView[], form: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const q of questions) {
    const value = form[q.id];
    if (value === undefined || value === null || value === "") continue;
    if (q.kind === "numeric") {
      const n = Number(value);
      if (Number.isFinite(n)) out[q.id] = n;
    } else if (q.kind === "multiple") {
      if (Array.isArray(value) && value.length) out[q.id] = value;
    } else {
      out[q.id] = value;
    }
  }
  return out;
}

/** "4 min 05 s left", counting down to `deadline` from `now` (ms). */
export function timeLeft(deadline: string, now: number): string {
  const s = Math.max(0, Math.floor((Date.parse(deadline) - now) / 1000));
  const m = Math.floor(s / 60);
  return m > 0 ? `${m} min ${String(s % 60).padStart(2, "0")} s left` : `${s} s left`;
}
