/**
 * Search (GET /api/v1/search, core_api/search/): the types of its answer, the address of a results page,
 * and where each hit leads. The server decides what the caller may see; the page only shows it.
 */
import type { ApiClient } from "./api";

export type Kind = "courses" | "lectures" | "messages" | "posts" | "users";
/** Every kind in the order the results page lists them. */
export const KINDS: readonly Kind[] = ["courses", "lectures", "messages", "posts", "users"];
export const KIND_TITLES: Record<Kind, string> = {
  courses: "Courses",
  lectures: "Lectures",
  messages: "Messages",
  posts: "Posts",
  users: "People",
};

export interface Segment {
  text: string;
  match: boolean;
}

interface HitBase {
  id: string;
  rank: number;
  snippet: Segment[];
}

export interface CourseHit extends HitBase {
  owner_id: string;
  title: string;
  status: "draft" | "published";
}

export interface LectureHit extends HitBase {
  course_id: string;
  course_title: string;
  position: number;
  title: string;
}

export interface MessageHit extends HitBase {
  room_id: string;
  room_name: string;
  seq: number;
  author_id: string;
  author_name: string;
  created_at: string;
}

/** A forum post; a topic's opening post (depth 0) also stands for the topic's title. */
export interface PostHit extends HitBase {
  topic_id: string;
  topic_title: string;
  title_snippet: Segment[];
  community_id: string | null;
  course_id: string | null;
  depth: number;
  author_id: string;
  author_name: string;
  created_at: string;
}

export interface UserHit extends HitBase {
  display_name: string;
  email: string;
  role: string;
}

export type AnyHit = CourseHit | LectureHit | MessageHit | PostHit | UserHit;

export interface Group<T> {
  items: T[];
  next_cursor: string | null;
}

export interface SearchResults {
  words: string[];
  courses: Group<CourseHit> | null;
  lectures: Group<LectureHit> | null;
  messages: Group<MessageHit> | null;
  posts: Group<PostHit> | null;
  users: Group<UserHit> | null;
}

export const PAGE = 10;

/** The results page of a query (`/search?q=...`); the header's search box goes there. */
export function searchHref(q: string): string {
  return `/search?${new URLSearchParams({ q: q.trim() }).toString()}`;
}

/** The query a results page shows, from its address. */
export function queryOf(search: string): string {
  return (new URLSearchParams(search).get("q") ?? "").trim();
}

export const search = (api: ApiClient, q: string): Promise<SearchResults> =>
  api.get<SearchResults>("/search", { q, limit: PAGE });

/** The next page of one kind. */
export const more = (api: ApiClient, q: string, kind: Kind, cursor: string): Promise<SearchResults> =>
  api.get<SearchResults>("/search", { q, kinds: kind, limit: PAGE, cursor });

/** The kinds that came back (searched), in page order. */
export function groupsOf(results: SearchResults): Kind[] {
  return KINDS.filter((kind) => results[kind] !== null);
}

/** The number of hits shown, over every kind. */
export function countOf(results: SearchResults): number {
  return groupsOf(results).reduce((n, kind) => n + (results[kind]?.items.length ?? 0), 0);
}

/** Where a hit leads: its course, lecture, room or topic (people have no page of their own). */
export function hrefOf(kind: Kind, hit: AnyHit): string | null {
  switch (kind) {
    case "courses":
      return `/courses/${hit.id}`;
    case "lectures":
      return `/courses/${(hit as LectureHit).course_id}/lectures/${hit.id}`;
    case "messages":
      return `/rooms/${(hit as MessageHit).room_id}`;
    case "posts":
      return `/topics/${(hit as PostHit).topic_id}`;
    default:
      return null;
  }
}

/** A hit's heading. */
export function titleOf(kind: Kind, hit: AnyHit): string {
  switch (kind) {
    case "courses":
      return (hit as CourseHit).title;
    case "lectures":
      return (hit as LectureHit).title;
    case "messages":
      return `${(hit as MessageHit).author_name} in ${(hit as MessageHit).room_name}`;
    case "posts":
      return (hit as PostHit).topic_title;
    default:
      return (hit as UserHit).display_name;
  }
}
