import { describe, expect, it } from "vitest";

import { answersOut, type QuestionView, timeLeft } from "../src/lib/quizzes";

const q = (id: string, kind: QuestionView["kind"]): QuestionView => ({
  id, kind, prompt: id, points: 1, options: null, language: null, starter: null,
});

describe("answersOut", () => {
  it("sends numbers for numeric questions and leaves blanks out", () => {
    const questions = [q("a", "numeric"), q("b", "short"), q("c", "multiple"), q("d", "true_false"), q("e", "numeric")];
    expect(answersOut(questions, { a: "3.14", b: "", c: [], d: false, e: "not a number" })).toEqual({
      a: 3.14,
      d: false,
    });
  });
});

describe("timeLeft", () => {
  it("counts down in minutes and seconds, never below zero", () => {
    const now = Date.parse("2026-12-03T10:00:00Z");
    expect(timeLeft("2026-12-03T10:04:05Z", now)).toBe("4 min 05 s left");
    expect(timeLeft("2026-12-03T10:00:09Z", now)).toBe("9 s left");
    expect(timeLeft("2026-12-03T09:00:00Z", now)).toBe("0 s left");
  });
});
