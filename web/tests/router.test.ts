import { describe, expect, it } from "vitest";

import { Backoff } from "../src/lib/backoff";
import { match, safeNext, type RouteDef } from "../src/lib/router";

const page = () => Promise.resolve({ default: (() => {}) as never });
const routes: RouteDef[] = [
  { path: "/", title: "Home", load: page },
  { path: "/rooms", title: "Rooms", load: page },
  { path: "/rooms/:id", title: "Room", load: page },
  { path: "/contests/:id/problems/:pid", title: "Problem", load: page },
];

describe("match", () => {
  it("matches literal and parameter segments", () => {
    expect(match(routes, "/")?.route.path).toBe("/");
    expect(match(routes, "/rooms/")?.route.path).toBe("/rooms");
    expect(match(routes, "/rooms/a%20b")?.params).toEqual({ id: "a b" });
    expect(match(routes, "/contests/7/problems/A")?.params).toEqual({ id: "7", pid: "A" });
  });

  it("answers null for unknown paths and malformed escapes (the 404 page)", () => {
    expect(match(routes, "/rooms/1/extra")).toBeNull();
    expect(match(routes, "/nope")).toBeNull();
    expect(match(routes, "/rooms/%E0%A4%A")).toBeNull();
  });
});

describe("safeNext", () => {
  it("only follows same-origin paths", () => {
    expect(safeNext("?next=%2Frooms%2F1")).toBe("/rooms/1");
    expect(safeNext("?next=https://evil.example")).toBe("/");
    expect(safeNext("?next=//evil.example")).toBe("/");
    expect(safeNext("?next=/\\evil.example")).toBe("/");
    expect(safeNext("")).toBe("/");
  });
});

describe("Backoff", () => {
  it("doubles up to the cap, jittered between half and all of it, and resets", () => {
    const low = new Backoff(500, 4000, () => 0);
    expect([low.next(), low.next(), low.next(), low.next(), low.next()]).toEqual([250, 500, 1000, 2000, 2000]);
    const high = new Backoff(500, 4000, () => 1);
    expect([high.next(), high.next()]).toEqual([500, 1000]);
    high.reset();
    expect(high.next()).toBe(500);
  });
});
