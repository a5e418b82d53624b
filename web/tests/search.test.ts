import { describe, expect, it } from "vitest";

import { groupsOf, hrefOf, KIND_TITLES, type PostHit, type SearchResults, titleOf } from "../src/lib/search";

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

describe("search posts", () => {
  it("links a post to its topic, titled by the topic", () => {
    expect(hrefOf("posts", post)).toBe("/topics/t1");
    expect(titleOf("posts", post)).toBe("Sorting lists");
    expect(KIND_TITLES.posts).toBe("Posts");
  });

  it("lists posts after messages and before people", () => {
    const empty = { items: [], next_cursor: null };
    const results: SearchResults = {
      words: ["sort"],
      courses: empty,
      lectures: null,
      messages: empty,
      posts: { items: [post], next_cursor: null },
      users: empty,
    };
    expect(groupsOf(results)).toEqual(["courses", "messages", "posts", "users"]);
  });
});
