import { describe, expect, it } from "vitest";

import { ApiClient } from "../src/lib/api";
import {
  attachFile,
  courseProgress,
  lectureLink,
  listCourses,
  parseTags,
  startParam,
  verifyCertificate,
} from "../src/lib/courses";
import { ApiError } from "../src/lib/errors";
import { memoryStore } from "../src/lib/tokens";

/** A client signed in against a stand-in server that answers every call with `status` and `body`. */
async function clientAnswering(status: number, body: unknown) {
  const seen: { url: string; auth: string | null }[] = [];
  const fetcher: typeof fetch = async (input, init) => {
    const url = String(input);
    const headers = (init?.headers ?? {}) as Record<string, string>;
    seen.push({ url, auth: headers["Authorization"] ?? null });
    const answer = (s: number, b: unknown) =>
      new Response(JSON.stringify(b), { status: s, headers: { "content-type": "application/json" } });
    if (url.endsWith("/auth/login"))
      return answer(200, { access_token: "a1", refresh_token: "r1", token_type: "bearer", expires_in: 900 });
    return answer(status, body);
  };
  const api = new ApiClient({ store: memoryStore(), fetch: fetcher });
  await api.login("ada@example.com", "pw");
  return { api, seen };
}

describe("courseProgress", () => {
  it("is null for a learner who is not enrolled (the server's 403), so the page offers to enrol", async () => {
    const { api } = await clientAnswering(403, {
      error: { code: "forbidden", message: "you are not enrolled in this course" },
    });
    await expect(courseProgress(api, "c1")).resolves.toBeNull();
  });

  it("passes any other failure on, to be shown as its message", async () => {
    const { api } = await clientAnswering(404, { error: { code: "not_found", message: "course not found" } });
    await expect(courseProgress(api, "c1")).rejects.toThrow(ApiError);
    await expect(courseProgress(api, "c1")).rejects.toThrow("course not found");
  });
});

describe("verifyCertificate", () => {
  it("asks without a token (the page is public) and escapes the code", async () => {
    const { api, seen } = await clientAnswering(200, { code: "a/b", valid: true });
    await verifyCertificate(api, "a/b");
    expect(seen.at(-1)).toEqual({ url: "/api/v1/certificates/a%2Fb", auth: null });
  });
});

describe("the catalogue's filters", () => {
  it("sends the category once and repeats `tag` for each tag (the server wants all of them)", async () => {
    const { api, seen } = await clientAnswering(200, { items: [], next_cursor: null });
    await listCourses(api, null, false, { category: "data science", tags: ["python", "ml"] });
    expect(seen.at(-1)?.url).toBe("/api/v1/courses?limit=20&category=data+science&tag=python&tag=ml");
    await listCourses(api, null, false, { category: "", tags: [] });
    expect(seen.at(-1)?.url).toBe("/api/v1/courses?limit=20");
  });

  it("reads comma-separated tags, dropping blanks (the server normalises case and spaces)", () => {
    expect(parseTags(" Python, Data  Science,, ")).toEqual(["Python", "Data  Science"]);
    expect(parseTags("")).toEqual([]);
  });
});

describe("continue links", () => {
  it("open the lecture at the saved position with ?t=, and the player reads it back", () => {
    expect(lectureLink("c 1", "l/2", 12.7)).toBe("/courses/c%201/lectures/l%2F2?t=12");
    expect(lectureLink("c1", "l2", 0)).toBe("/courses/c1/lectures/l2");
    expect(startParam("?t=12")).toBe(12);
    expect(startParam("?t=-3")).toBeNull();
    expect(startParam("?t=abc")).toBeNull();
    expect(startParam("?t=")).toBeNull();
    expect(startParam("")).toBeNull();
  });
});

describe("attachFile", () => {
  it("sends the file's bytes as the body with its type, and its name in the query", async () => {
    const sent: { url: string; type: string | null; body: unknown }[] = [];
    const fetcher: typeof fetch = async (input, init) => {
      const url = String(input);
      const headers = (init?.headers ?? {}) as Record<string, string>;
      sent.push({ url, type: headers["Content-Type"] ?? null, body: init?.body });
      const body = url.endsWith("/auth/login")
        ? { access_token: "a1", refresh_token: "r1", token_type: "bearer", expires_in: 900 }
        : { id: "f1", name: "Mé report.pdf" };
      return new Response(JSON.stringify(body), { status: 201, headers: { "content-type": "application/json" } });
    };
    const api = new ApiClient({ store: memoryStore(), fetch: fetcher });
    await api.login("ada@example.com", "pw");
    const file = new File(["%PDF-1.4"], "Mé report.pdf", { type: "application/pdf" });
    await expect(attachFile(api, "s/1", file)).resolves.toEqual({ id: "f1", name: "Mé report.pdf" });
    const last = sent.at(-1);
    expect(last?.url).toBe("/api/v1/submissions/s%2F1/files?name=M%C3%A9+report.pdf");
    expect(last?.type).toBe("application/pdf");
    expect(last?.body).toBe(file);
  });
});
