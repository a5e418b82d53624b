import { describe, expect, it } from "vitest";

import { scoreText } from "../src/lib/gradebook";

describe("scoreText", () => {
  it("shows a score out of its maximum, rounded to hundredths, or a dash", () => {
    expect(scoreText(8.5, 10)).toBe("8.5 / 10");
    expect(scoreText(2 / 3, 1)).toBe("0.67 / 1");
    expect(scoreText(null, 10)).toBe("—");
    expect(scoreText(0, 20)).toBe("0 / 20");
  });
});
