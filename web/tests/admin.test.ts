import { describe, expect, it } from "vitest";

import { auditHref, auditQuery, describeDetails, peopleOf } from "../src/lib/admin";
import { cleanName, nameProblem } from "../src/lib/profile";

describe("the audit log's filters", () => {
  it("leaves empty fields out and sends times as ISO instants", () => {
    expect(auditQuery({ actor_id: " ", action: "", since: "", until: "" }, null)).toEqual({ limit: 25, cursor: null });
    const local = "2026-12-02T10:30";
    const query = auditQuery({ actor_id: " abc ", action: "user.role_granted", since: local }, "next");
    expect(query).toMatchObject({ actor_id: "abc", action: "user.role_granted", cursor: "next" });
    expect(query.since).toBe(new Date(local).toISOString());
    expect(query.until).toBeUndefined();
  });

  it("describes details: before → after, then the rest", () => {
    expect(describeDetails({ before: "student", after: "instructor" })).toBe("student → instructor");
    expect(describeDetails({ user_id: "u1", before: "member", after: "admin" })).toBe("member → admin (user_id: u1)");
    expect(describeDetails({ user_id: "u1", role: "member" })).toBe("user_id: u1, role: member");
  });
});

describe("display names before they are sent", () => {
  it("normalises like the server (NFKC, single spaces)", () => {
    expect(cleanName("  Ａda \t Lovelace ")).toBe("Ada Lovelace");
  });

  it("says why a name cannot be used", () => {
    expect(nameProblem("   ")).toBe("Enter a display name.");
    expect(nameProblem("a".repeat(81))).toMatch(/80/);
    expect(nameProblem("Ada\u200bLovelace")).toMatch(/invisible/);
    expect(nameProblem("---")).toMatch(/letter or digit/);
    expect(nameProblem("Ada Lovelace")).toBeNull();
  });
});

describe("the audit page's address and names", () => {
  it("keeps a filter in the address", () => {
    expect(auditHref({ actor_id: "", action: "" })).toBe("/admin/audit");
    expect(auditHref({ actor_id: " u1 ", action: "user.renamed" })).toBe("/admin/audit?actor_id=u1&action=user.renamed");
  });

  it("names actors and users targeted, each once", () => {
    const entry = (actor: string | null, kind: string, target: string) => ({
      id: target, actor_id: actor, action: "a", target_kind: kind, target_id: target, details: {}, created_at: "",
    });
    expect(peopleOf([entry("a", "user", "b"), entry("a", "community", "c"), entry(null, "user", "a")])).toEqual(["a", "b"]);
  });
});
