/**
 * The caller's account (core_api/accounts/): sessions, password change, password reset by email.
 *
 * Ending a session stops its tokens at their next request; changing the password ends every other session;
 * a reset (from the emailed link) ends every session, so the user signs in again with the new password.
 */
import type { ApiClient } from "./api";
import type { Job } from "./media";

export const MIN_PASSWORD = 8;

export interface Session {
  id: string;
  created_at: string;
  last_used_at: string;
  expires_at: string;
  user_agent: string;
  address: string;
  current: boolean;
}

export const listSessions = async (api: ApiClient): Promise<Session[]> =>
  (await api.request<{ items: Session[] }>("GET", "/me/sessions")).items;

export const endSession = (api: ApiClient, id: string): Promise<void> =>
  api.request<void>("DELETE", `/me/sessions/${encodeURIComponent(id)}`);

export const endOtherSessions = async (api: ApiClient): Promise<number> =>
  (await api.request<{ ended: number }>("DELETE", "/me/sessions")).ended;

export const changePassword = (api: ApiClient, current: string, next: string): Promise<void> =>
  api.request<void>("POST", "/me/password", { body: { current_password: current, new_password: next } });

export const requestReset = async (api: ApiClient, email: string): Promise<string> =>
  (await api.request<{ message: string }>("POST", "/auth/password-reset", { body: { email }, auth: false })).message;

export const confirmReset = (api: ApiClient, token: string, password: string): Promise<void> =>
  api.request<void>("POST", "/auth/password-reset/confirm", { body: { token, new_password: password }, auth: false });

/** Why a new password would be refused before sending it, or null. */
export function passwordProblem(password: string, again: string): string | null {
  if ([...password].length < MIN_PASSWORD) return `Use at least ${MIN_PASSWORD} characters.`;
  if (password.length > 256) return "At most 256 characters.";
  if (password !== again) return "The two passwords differ.";
  return null;
}

/** A short name for a session's browser, from its User-Agent. */
export function deviceName(userAgent: string): string {
  if (!userAgent) return "Unknown device";
  const browser =
    /Edg\//.test(userAgent) ? "Edge" :
    /Firefox\//.test(userAgent) ? "Firefox" :
    /Chrom(e|ium)\//.test(userAgent) ? "Chrome" :
    /Safari\//.test(userAgent) ? "Safari" : null;
  const system =
    /Android/.test(userAgent) ? "Android" :
    /iPhone|iPad/.test(userAgent) ? "iOS" :
    /Windows/.test(userAgent) ? "Windows" :
    /Mac OS X/.test(userAgent) ? "macOS" :
    /Linux/.test(userAgent) ? "Linux" : null;
  if (browser && system) return `${browser} on ${system}`;
  return browser ?? system ?? userAgent.slice(0, 40);
}

/** Start an export of all the caller's data (a job; follow it with `followJob`). */
export const startExport = (api: ApiClient): Promise<Job> => api.request<Job>("POST", "/me/exports");

/** The finished export's zip, from its job's `result.download` (`/api/v1/me/exports/{id}/download`). */
export function downloadExport(api: ApiClient, job: Job): Promise<Blob> {
  const path = String(job.result?.download ?? `/api/v1/me/exports/${job.id}/download`).replace(/^\/api\/v1/, "");
  return api.request<Blob>("GET", path, { blob: true });
}

/** Delete the account (irreversible); `eraseMessages` also erases the text of the user's chat messages. */
export const deleteAccount = (api: ApiClient, password: string, eraseMessages: boolean): Promise<void> =>
  api.request<void>("DELETE", "/me", { body: { password, erase_messages: eraseMessages } });
