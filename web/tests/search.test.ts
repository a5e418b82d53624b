import { describe, expect, it } from "vitest";

import {
  countOf,
  groupsOf,
  hrefOf,
  KIND_TITLES,
  type PostHit,
  queryOf,
  searchHref,
  type SearchResults,
  titleOf,
} from "../src/lib/search";

const results: SearchResults = {
  words: ["algo"],
  courses: { items: [{ id: "c1", rank: 1, snippet: [], owner_id: "o", title: "Algorithms", status: "published" }], next_cursor: null },
  lectures: { items: [], next_cursor: null },
  messages: {
    items: [
      {
        id: "m1",
        rank: 0.5,
        snippet: [{ text: "algo", match: true }],
        room_id: "r1",
        room_name: "Study",
        seq: 3,
        author_id: "a",
        author_name: "Ada",
        created_at: "2026-12-03T08:00:00Z",
      },
    ],
    next_cursor: "x",
  },
  posts: null,
  users: null,
};

const post: PostHit = {
  id: "p1",
  rank: 0.5,
  snippet: [{ text: "use sorted()", match: false }],
  topic_id: "t1",
  topic_title: "Sorting lists",
  title_snippet: [{ text: "Sorting lists", match: false }],
  community_id: "c1",
  course_id: null,
  depth: 1,
  author_id: "u1",
  author_name: "Ada",
  created_at: "2026-12-03T09:00:00Z",
};

describe("search results", () => {
  it("round-trips the query through the page's address", () => {
    expect(searchHref("  graph & trees ")).toBe("/search?q=graph+%26+trees");
    expect(queryOf("?q=graph+%26+trees")).toBe("graph & trees");
    expect(queryOf("")).toBe("");
  });

  it("lists the kinds searched in page order and counts their hits", () => {
    expect(groupsOf(results)).toEqual(["courses", "lectures", "messages"]);
    expect(countOf(results)).toBe(2);
  });

  it("leads each hit to its page", () => {
    expect(hrefOf("courses", results.courses!.items[0]!)).toBe("/courses/c1");
    expect(hrefOf("messages", results.messages!.items[0]!)).toBe("/rooms/r1");
    expect(titleOf("messages", results.messages!.items[0]!)).toBe("Ada in Study");
  });
});

describe("search posts", () => {
  it("links a post to its topic, titled by the topic", () => {
    expect(hrefOf("posts", post)).toBe("/topics/t1");
    expect(titleOf("posts", post)).toBe("Sorting lists");
    expect(KIND_TITLES.posts).toBe("Posts");
  });

  it("lists posts after messages and before people", () => {
    const withPosts: SearchResults = { ...results, posts: { items: [post], next_cursor: null }, users: { items: [], next_cursor: null } };
    expect(groupsOf(withPosts)).toEqual(["courses", "lectures", "messages", "posts", "users"]);
    expect(countOf(withPosts)).toBe(3);
  });
});
