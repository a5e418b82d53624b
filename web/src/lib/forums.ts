/**
 * Forums (docs/forums.md): a community's or a course's board of topics, each a tree of replies with votes
 * and an accepted answer. REST only; the screens are routes/forums/.
 */
import type { ApiClient, Page } from "./api";

export type BoardKind = "community" | "course";

export interface Author {
  id: string;
  display_name: string;
}

export interface Post {
  id: string;
  topic_id: string;
  parent_id: string | null;
  depth: number;
  author: Author;
  body: string;
  created_at: string;
  edited_at: string | null;
  deleted: boolean;
  score: number;
  my_vote: number;
  accepted: boolean;
}

export interface Topic {
  id: string;
  community_id: string | null;
  course_id: string | null;
  title: string;
  author: Author;
  created_at: string;
  last_activity_at: string;
  pinned: boolean;
  locked: boolean;
  accepted_post_id: string | null;
  reply_count: number;
  score: number;
  excerpt: string;
}

export interface TopicDetail extends Topic {
  opening: Post;
  can_post: boolean;
  can_moderate: boolean;
}

export interface Board extends Page<Topic> {
  can_post: boolean;
  can_moderate: boolean;
}

const enc = encodeURIComponent;
const base = (kind: BoardKind, id: string): string => `/${kind === "community" ? "communities" : "courses"}/${enc(id)}`;

export const listTopics = (api: ApiClient, kind: BoardKind, id: string, cursor: string | null): Promise<Board> =>
  api.get<Board>(`${base(kind, id)}/topics`, { limit: 30, cursor });

export const createTopic = (api: ApiClient, kind: BoardKind, id: string, title: string, body: string): Promise<TopicDetail> =>
  api.post<TopicDetail>(`${base(kind, id)}/topics`, { title, body });

export const getTopic = (api: ApiClient, id: string): Promise<TopicDetail> => api.get<TopicDetail>(`/topics/${enc(id)}`);

export const listReplies = (api: ApiClient, id: string, cursor: string | null): Promise<Page<Post>> =>
  api.get<Page<Post>>(`/topics/${enc(id)}/posts`, { limit: 200, cursor });

export const reply = (api: ApiClient, topicId: string, body: string, parentId: string | null): Promise<Post> =>
  api.post<Post>(`/topics/${enc(topicId)}/posts`, parentId ? { body, parent_id: parentId } : { body });

export const vote = (api: ApiClient, postId: string, value: -1 | 0 | 1): Promise<Post> =>
  api.request<Post>("PUT", `/posts/${enc(postId)}/vote`, { body: { value } });

export const accept = (api: ApiClient, topicId: string, postId: string | null): Promise<TopicDetail> =>
  api.request<TopicDetail>("PUT", `/topics/${enc(topicId)}/accepted`, { body: { post_id: postId } });

export const setFlag = (api: ApiClient, topicId: string, flag: "pinned" | "locked", on: boolean): Promise<TopicDetail> =>
  api.request<TopicDetail>("PUT", `/topics/${enc(topicId)}/${flag}`, { body: { on } });

/**
 * Replies in reading order for a threaded view: each post followed by its answers (oldest first), depth-first.
 * Posts whose parent is not among them (the opening post, or a page not loaded yet) start the tree.
 */
export function threadOrder(posts: readonly Post[]): Post[] {
  const ids = new Set(posts.map((p) => p.id));
  const children = new Map<string | null, Post[]>();
  for (const p of posts) {
    const key = p.parent_id !== null && ids.has(p.parent_id) ? p.parent_id : null;
    const list = children.get(key) ?? [];
    list.push(p);
    children.set(key, list);
  }
  const byTime = (a: Post, b: Post): number => a.created_at.localeCompare(b.created_at) || a.id.localeCompare(b.id);
  const out: Post[] = [];
  const walk = (key: string | null): void => {
    for (const p of (children.get(key) ?? []).sort(byTime)) {
      out.push(p);
      walk(p.id);
    }
  };
  walk(null);
  return out;
}

/** The vote a click sends: pressing the button of the current vote takes it back. */
export function nextVote(current: number, pressed: 1 | -1): -1 | 0 | 1 {
  return current === pressed ? 0 : pressed;
}
