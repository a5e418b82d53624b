/**
 * The community screens' REST calls and types, and the role rules the screens use to decide which controls
 * to offer (the server enforces the same rules in core_api/communities.py; a control offered wrongly would
 * only be refused with the server's message).
 */
import type { ApiClient, Page } from "./api";

export type CommunityRole = "owner" | "admin" | "member";

export interface Community {
  id: string;
  name: string;
  description: string;
  visibility: "public" | "private";
  created_by: string;
  created_at: string;
  member_count: number;
  my_role: CommunityRole | null;
}

export interface Member {
  user_id: string;
  display_name: string;
  role: CommunityRole;
  joined_at: string;
}

const RANK: Record<CommunityRole, number> = { member: 1, admin: 2, owner: 3 };

/** How much the caller may do in a community: platform admins act as its owner (0: not a member). */
export function actingRank(myRole: CommunityRole | null, platformAdmin: boolean): number {
  if (platformAdmin) return RANK.owner;
  return myRole ? RANK[myRole] : 0;
}

/** The roles an actor of rank `actor` may give a member who now has `target` (without `target` itself). */
export function rolesToGive(actor: number, target: CommunityRole, onSelf: boolean): CommunityRole[] {
  if (actor < RANK.admin || target === "owner") return [];
  if (actor < RANK.owner) {
    // Admins manage plain members; they may also step down themselves.
    return target === "admin" && onSelf ? ["member"] : [];
  }
  const all: CommunityRole[] = ["member", "admin", "owner"];
  return all.filter((role) => role !== target);
}

/** Whether an actor of rank `actor` may remove a member whose role is `target`. */
export function canRemove(actor: number, target: CommunityRole): boolean {
  if (target === "owner" || actor < RANK.admin) return false;
  return target === "member" || actor >= RANK.owner;
}

export function roleLabel(role: CommunityRole): string {
  return { owner: "Owner", admin: "Admin", member: "Member" }[role];
}

export const listCommunities = (api: ApiClient, cursor: string | null, mine = false): Promise<Page<Community>> =>
  api.get<Page<Community>>("/communities", { limit: 20, cursor, mine: mine || undefined });

export const getCommunity = (api: ApiClient, id: string): Promise<Community> =>
  api.get<Community>(`/communities/${id}`);

export const createCommunity = (
  api: ApiClient,
  body: { name: string; description: string; visibility: "public" | "private" },
): Promise<Community> => api.post<Community>("/communities", body);

export const joinCommunity = (api: ApiClient, id: string): Promise<Community> =>
  api.post<Community>(`/communities/${id}/join`);

export const leaveCommunity = (api: ApiClient, id: string): Promise<void> =>
  api.post<void>(`/communities/${id}/leave`);

export const listMembers = (api: ApiClient, id: string, cursor: string | null): Promise<Page<Member>> =>
  api.get<Page<Member>>(`/communities/${id}/members`, { limit: 50, cursor });

export const setMemberRole = (api: ApiClient, id: string, userId: string, role: CommunityRole): Promise<Member> =>
  api.request<Member>("PUT", `/communities/${id}/members/${userId}`, { body: { role } });

export const removeMember = (api: ApiClient, id: string, userId: string): Promise<void> =>
  api.request<void>("DELETE", `/communities/${id}/members/${userId}`);
