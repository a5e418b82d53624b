/** The admin screens' REST calls and types: accounts and their platform roles, and the audit log. */
import type { ApiClient, Page, User } from "./api";

export type PlatformRole = User["role"];

export interface Account extends User {
  created_at: string;
}

export interface AuditEntry {
  id: string;
  actor_id: string | null;
  action: string;
  target_kind: string;
  target_id: string;
  details: Record<string, unknown>;
  created_at: string;
}

export interface AuditFilter {
  actor_id?: string;
  action?: string;
  /** `datetime-local` values (the browser's local time), or empty. */
  since?: string;
  until?: string;
}

export const ROLE_LABELS: Record<PlatformRole, string> = {
  student: "Learner",
  instructor: "Instructor",
  admin: "Administrator",
};

export const findAccounts = (api: ApiClient, q: string, cursor: string | null): Promise<Page<Account>> =>
  api.get<Page<Account>>("/users", { limit: 20, cursor, q: q.trim() || undefined });

export const grantRole = (api: ApiClient, userId: string, role: PlatformRole): Promise<Account> =>
  api.request<Account>("PUT", `/users/${userId}/role`, { body: { role } });

/** A `datetime-local` value as an ISO instant (it is local time), or undefined when empty or unreadable. */
export function isoOf(local: string | undefined): string | undefined {
  if (!local) return undefined;
  const at = new Date(local);
  return Number.isNaN(at.getTime()) ? undefined : at.toISOString();
}

/** The audit log's query for a filter: empty fields are left out, times sent as ISO instants. */
export function auditQuery(filter: AuditFilter, cursor: string | null): Record<string, string | number | null> {
  const query: Record<string, string | number | null> = { limit: 25, cursor };
  const actor = filter.actor_id?.trim();
  const action = filter.action?.trim();
  if (actor) query.actor_id = actor;
  if (action) query.action = action;
  const since = isoOf(filter.since);
  const until = isoOf(filter.until);
  if (since) query.since = since;
  if (until) query.until = until;
  return query;
}

export const readAudit = (api: ApiClient, filter: AuditFilter, cursor: string | null): Promise<Page<AuditEntry>> =>
  api.get<Page<AuditEntry>>("/audit", auditQuery(filter, cursor));

/** One line saying what the entry's details are (`before: student → after: instructor`). */
export function describeDetails(details: Record<string, unknown>): string {
  if ("before" in details && "after" in details) {
    const rest = Object.entries(details).filter(([k]) => k !== "before" && k !== "after");
    const extra = rest.map(([k, v]) => `${k}: ${String(v)}`).join(", ");
    return `${String(details.before)} → ${String(details.after)}${extra ? ` (${extra})` : ""}`;
  }
  return Object.entries(details)
    .map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : String(v)}`)
    .join(", ");
}

/** The accounts an audit page names (actors, and targets that are users), each once. */
export function peopleOf(entries: readonly AuditEntry[]): string[] {
  const ids: string[] = [];
  for (const e of entries) {
    if (e.actor_id) ids.push(e.actor_id);
    if (e.target_kind === "user") ids.push(e.target_id);
  }
  return [...new Set(ids)];
}

/** The address of the audit page showing `filter` (empty fields left out). */
export function auditHref(filter: AuditFilter): string {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(filter)) {
    if (typeof value === "string" && value.trim()) params.set(key, value.trim());
  }
  const search = params.toString();
  return `/admin/audit${search ? `?${search}` : ""}`;
}
