import { describe, expect, it } from "vitest";

import { actingRank, canRemove, rolesToGive } from "../src/lib/communities";

describe("community role rules (as core_api/communities.py)", () => {
  const owner = actingRank("owner", false);
  const admin = actingRank("admin", false);
  const member = actingRank("member", false);

  it("platform admins act as owners; non-members have no rank", () => {
    expect(actingRank(null, true)).toBe(owner);
    expect(actingRank(null, false)).toBe(0);
  });

  it("owners give any other role, hand ownership over, never demote the owner directly", () => {
    expect(rolesToGive(owner, "member", false)).toEqual(["admin", "owner"]);
    expect(rolesToGive(owner, "admin", false)).toEqual(["member", "owner"]);
    expect(rolesToGive(owner, "owner", true)).toEqual([]);
  });

  it("admins manage nobody's role but may step down themselves; members manage nothing", () => {
    expect(rolesToGive(admin, "member", false)).toEqual([]);
    expect(rolesToGive(admin, "admin", false)).toEqual([]);
    expect(rolesToGive(admin, "admin", true)).toEqual(["member"]);
    expect(rolesToGive(member, "member", false)).toEqual([]);
  });

  it("admins remove members, owners also admins, nobody the owner", () => {
    expect(canRemove(admin, "member")).toBe(true);
    expect(canRemove(admin, "admin")).toBe(false);
    expect(canRemove(owner, "admin")).toBe(true);
    expect(canRemove(owner, "owner")).toBe(false);
    expect(canRemove(member, "member")).toBe(false);
  });
});
