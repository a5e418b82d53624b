import { describe, expect, it } from "vitest";

import { PresenceList, type PresentUser } from "../src/lib/presence";

const ada: PresentUser = { id: "a", display_name: "Ada" };
const bo: PresentUser = { id: "b", display_name: "Bo" };
const cy: PresentUser = { id: "c", display_name: "Cy" };
const names = (list: PresenceList): string[] => list.list().map((u) => u.display_name);

describe("PresenceList: the revision merge rule", () => {
  it("holds changes until the join answer, then applies only those newer than its list", () => {
    const list = new PresenceList();
    list.restart();
    // Announcements that overtook the answer: Bo's join at rev 4 is already in the list (rev 5),
    // Cy's join at rev 6 is not.
    expect(list.apply({ user: bo, state: "joined", rev: 4 })).toBe(false);
    expect(list.apply({ user: cy, state: "joined", rev: 6 })).toBe(false);
    expect(list.ready).toBe(false);
    list.reset([ada, bo], 5);
    expect(names(list)).toEqual(["Ada", "Bo", "Cy"]);
  });

  it("does not let an old 'joined' bring back someone who left (the race of issue 13)", () => {
    const list = new PresenceList();
    list.restart();
    list.apply({ user: bo, state: "joined", rev: 3 });
    list.reset([ada], 4); // Bo joined at 3 and left at 4: not in the list
    expect(names(list)).toEqual(["Ada"]);
    expect(list.apply({ user: bo, state: "left", rev: 4 })).toBe(false);
    expect(names(list)).toEqual(["Ada"]);
  });

  it("compares revisions per user: another user's older change still applies", () => {
    const list = new PresenceList();
    list.reset([ada], 1);
    expect(list.apply({ user: bo, state: "joined", rev: 5 })).toBe(true);
    expect(list.apply({ user: cy, state: "joined", rev: 3 })).toBe(true); // older, but about Cy
    expect(list.apply({ user: bo, state: "left", rev: 4 })).toBe(false); // older than Bo's last change
    expect(names(list)).toEqual(["Ada", "Bo", "Cy"]);
    expect(list.apply({ user: bo, state: "left", rev: 7 })).toBe(true);
    expect(names(list)).toEqual(["Ada", "Cy"]);
  });

  it("applies batches entry by entry, with each user's own rev", () => {
    const list = new PresenceList();
    list.reset([ada, bo], 10);
    list.applyBatch({ joined: [{ ...cy, rev: 12 }], left: [{ ...bo, rev: 9 }, { ...ada, rev: 11 }] });
    expect(names(list)).toEqual(["Bo", "Cy"]);
  });

  it("starts over at a second join (a reconnect)", () => {
    const list = new PresenceList();
    list.reset([ada, bo], 10);
    list.apply({ user: cy, state: "joined", rev: 11 });
    list.restart();
    expect(list.ready).toBe(false);
    expect(names(list)).toEqual([]);
    list.reset([cy], 20);
    expect(list.apply({ user: bo, state: "joined", rev: 15 })).toBe(false);
    expect(names(list)).toEqual(["Cy"]);
  });

  it("ignores garbage", () => {
    const list = new PresenceList();
    list.reset([ada, null as unknown as PresentUser], 1);
    expect(list.apply({ user: { id: 3 } as unknown as PresentUser, state: "joined", rev: 2 })).toBe(false);
    expect(names(list)).toEqual(["Ada"]);
  });
});

describe("PresenceList: renames", () => {
  it("shows a present user's new name, in name order, and ignores one not listed", () => {
    const list = new PresenceList();
    list.reset([ada, bo], 1);
    expect(list.rename({ id: "a", display_name: "Zed" })).toBe(true);
    expect(names(list)).toEqual(["Bo", "Zed"]);
    expect(list.rename({ id: "a", display_name: "Zed" })).toBe(false); // heard twice (two tabs)
    expect(list.rename({ id: "c", display_name: "Cyrus" })).toBe(false);
    expect(names(list)).toEqual(["Bo", "Zed"]);
  });

  it("holds a rename that overtook the join answer and applies it to the answer's list, in order", () => {
    const list = new PresenceList();
    list.restart();
    // The answer's list was read just before Ada's rename reached presence; the room:renamed came first.
    expect(list.rename({ id: "a", display_name: "Zed" })).toBe(false);
    expect(list.apply({ user: cy, state: "joined", rev: 6 })).toBe(false);
    expect(list.rename({ id: "c", display_name: "Cyrus" })).toBe(false);
    list.reset([ada, bo], 5);
    expect(names(list)).toEqual(["Bo", "Cyrus", "Zed"]);
  });
});
