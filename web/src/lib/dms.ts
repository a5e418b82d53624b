/**
 * Direct messages: a conversation is a room of kind `dm` (docs/direct-messages.md), opened on the room
 * screen; this module is the REST side of the "Messages" screen: the list with unread counts, and
 * "find or start the conversation with these people".
 */
import type { ApiClient, Page } from "./api";

export interface Participant {
  id: string;
  display_name: string;
}

export interface Conversation {
  id: string;
  title: string;
  members: Participant[];
  last_seq: number;
  last_read_seq: number;
  unread: number;
  last_message: { seq: number; author: Participant; excerpt: string; deleted: boolean; created_at: string } | null;
  created: boolean;
}

/** The server counts unread messages up to this many. */
export const UNREAD_CAP = 1000;

export function listConversations(api: ApiClient, cursor: string | null): Promise<Page<Conversation>> {
  return api.get<Page<Conversation>>("/dms", { limit: 30, cursor });
}

/** Finds or starts the conversation of the signed-in user and `userIds`. */
export function startConversation(api: ApiClient, userIds: string[]): Promise<Conversation> {
  return api.post<Conversation>("/dms", { user_ids: userIds });
}

/** "3 unread", "999+ unread" at the server's cap, "" when there is nothing new. */
export function unreadLabel(unread: number): string {
  if (unread <= 0) return "";
  return unread >= UNREAD_CAP ? `${UNREAD_CAP - 1}+ unread` : `${unread} unread`;
}

/** The last line of a conversation as the list shows it. */
export function lastLine(c: Conversation, myId: string): string {
  const m = c.last_message;
  if (m === null) return "No messages yet";
  const who = m.author.id === myId ? "You" : m.author.display_name;
  return m.deleted ? `${who}: (deleted)` : `${who}: ${m.excerpt}`;
}

/** How many direct messages wait unread (`GET /dms/unread`). */
export const unreadDms = async (api: ApiClient): Promise<number> =>
  (await api.get<{ conversations: number; messages: number }>("/dms/unread")).messages;
