import { describe, expect, it } from "vitest";

import { bars, bucketLabel, dayLabel, hoursText, percentText, steps } from "../src/lib/analytics";

describe("the charts' geometry", () => {
  it("scales bars to the largest value and leaves a gap between them", () => {
    const drawn = bars([0, 2, 4], ["a", "b", "c"], 300, 100);
    expect(drawn.map((b) => b.height)).toEqual([0, 50, 100]);
    expect(drawn.map((b) => b.y)).toEqual([100, 50, 0]);
    expect(drawn[1]).toMatchObject({ x: 110, width: 80, label: "b", value: 2 });
  });

  it("draws nothing taller than the box when every value is 0", () => {
    expect(bars([0, 0], ["a", "b"], 100, 50).every((b) => b.height === 0)).toBe(true);
    expect(bars([], [], 100, 50)).toEqual([]);
  });

  it("draws a retention curve as steps", () => {
    expect(steps([1, 0.5], 100, 10)).toBe("0,0 50,0 50,5 100,5");
    expect(steps([], 100, 10)).toBe("");
  });
});

describe("labels", () => {
  it("names UTC days, shares, score ranges and watch time", () => {
    expect(dayLabel("2026-12-03")).toBe("Dec 3");
    expect(percentText(0.4)).toBe("40%");
    expect(bucketLabel(9)).toBe("90-100%");
    expect([hoursText(42), hoursText(600), hoursText(5400)]).toEqual(["42 s", "10 min", "1.5 h"]);
  });
});
