/** Applying to teach (core_api/teaching/): a learner's application, and the admins' queue. */
import type { ApiClient, Page } from "./api";

export type ApplicationState = "pending" | "approved" | "rejected" | "withdrawn";

export interface TeacherApplication {
  id: string;
  user_id: string;
  display_name: string;
  email: string | null;
  qualifications: string;
  links: string[];
  state: ApplicationState;
  created_at: string;
  decided_at: string | null;
  note: string;
}

/** The links typed one per line, trimmed, empty lines dropped. */
export function parseLinks(text: string): string[] {
  return text
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter(Boolean);
}

/** Why the form would be refused before sending it, or null. */
export function applicationProblem(qualifications: string, links: string[]): string | null {
  const text = qualifications.trim();
  if (text.length < 20) return "Say a little more about your qualifications (at least 20 characters).";
  if (text.length > 5000) return "At most 5000 characters.";
  if (links.length > 5) return "At most 5 links.";
  const bad = links.find((link) => !link.startsWith("https://"));
  if (bad) return `Links must start with https:// (${bad}).`;
  return null;
}

export const myApplications = async (api: ApiClient): Promise<TeacherApplication[]> =>
  (await api.request<{ items: TeacherApplication[] }>("GET", "/me/teacher-applications")).items;

export const applyToTeach = (api: ApiClient, qualifications: string, links: string[]): Promise<TeacherApplication> =>
  api.request<TeacherApplication>("POST", "/teacher-applications", { body: { qualifications, links } });

export const withdrawApplication = (api: ApiClient, id: string): Promise<TeacherApplication> =>
  api.request<TeacherApplication>("POST", `/teacher-applications/${encodeURIComponent(id)}/withdraw`);

export const applicationQueue = (api: ApiClient, cursor: string | null): Promise<Page<TeacherApplication>> =>
  api.request<Page<TeacherApplication>>("GET", "/teacher-applications", {
    query: { state: "pending", limit: 20, ...(cursor ? { cursor } : {}) },
  });

export const decideApplication = (
  api: ApiClient,
  id: string,
  decision: "approve" | "reject",
  note: string,
): Promise<TeacherApplication> =>
  api.request<TeacherApplication>("POST", `/teacher-applications/${encodeURIComponent(id)}/decision`, {
    body: { decision, note },
  });
