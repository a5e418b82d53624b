import { describe, expect, it } from "vitest";

import { formatDuration } from "../src/lib/courses";
import { ProgressReporter, resumePoint, type ProgressClock } from "../src/lib/progress";

/** A hand-driven interval clock: `tick()` runs the heartbeat as the timer would. */
function fakeClock(): ProgressClock & { tick(): void; running(): number } {
  const timers = new Map<number, () => void>();
  let next = 1;
  return {
    setInterval(fn) {
      timers.set(next, fn);
      return next++;
    },
    clearInterval(handle) {
      timers.delete(handle as number);
    },
    tick() {
      for (const fn of [...timers.values()]) fn();
    },
    running: () => timers.size,
  };
}

/** A server stand-in whose answers the test releases one at a time. */
function fakeServer() {
  const sent: number[] = [];
  const waiting: Array<{ resolve: () => void; reject: (e: unknown) => void }> = [];
  return {
    sent,
    send(position: number): Promise<number> {
      sent.push(position);
      return new Promise<number>((resolve, reject) => waiting.push({ resolve: () => resolve(position), reject }));
    },
    answer() {
      waiting.shift()?.resolve();
    },
    fail(error: unknown) {
      waiting.shift()?.reject(error);
    },
    get open() {
      return waiting.length;
    },
  };
}

const flush = () => new Promise((resolve) => setTimeout(resolve, 0));

function setup() {
  const clock = fakeClock();
  const server = fakeServer();
  let position = 0;
  const errors: unknown[] = [];
  const saved: number[] = [];
  const reporter = new ProgressReporter<number>({
    send: (p) => server.send(p),
    position: () => position,
    onError: (e) => errors.push(e),
    onSaved: (p) => saved.push(p),
    clock,
  });
  return { clock, server, reporter, errors, saved, at: (p: number) => (position = p) };
}

describe("ProgressReporter", () => {
  it("reports when playing starts and on every heartbeat while playing", async () => {
    const { clock, server, reporter, at, saved } = setup();
    at(12);
    reporter.playing();
    expect(server.sent).toEqual([12]);
    server.answer();
    await flush();
    for (const p of [17, 22, 27]) {
      at(p);
      clock.tick();
      server.answer();
      await flush();
    }
    expect(server.sent).toEqual([12, 17, 22, 27]);
    expect(saved).toEqual([12, 17, 22, 27]);
  });

  it("sends one report at a time, and the newest position once the one in flight answers", async () => {
    const { clock, server, reporter, at } = setup();
    reporter.playing();
    at(5);
    clock.tick(); // the first report (0) is still in flight: this one waits
    at(10);
    clock.tick();
    expect(server.sent).toEqual([0]);
    server.answer();
    await flush();
    expect(server.sent).toEqual([0, 10]); // not 5 then 10: the server compares consecutive reports
    expect(server.open).toBe(1);
  });

  it("reports at once on pause and seek, and stops the heartbeat while paused", async () => {
    const { clock, server, reporter, at } = setup();
    reporter.playing();
    server.answer();
    await flush();
    at(3.2);
    reporter.paused();
    expect(server.sent).toEqual([0, 3.2]);
    expect(clock.running()).toBe(0);
    server.answer();
    await flush();
    clock.tick();
    reporter.report(); // paused at the same place: nothing new to say
    expect(server.sent).toEqual([0, 3.2]);
    at(40);
    reporter.seeked();
    expect(server.sent).toEqual([0, 3.2, 40]);
  });

  it("tells a failure once, keeps trying on the next heartbeat, and says when it works again", async () => {
    const { clock, server, reporter, at, errors } = setup();
    reporter.playing();
    server.fail(new Error("offline"));
    await flush();
    at(5);
    clock.tick();
    server.fail(new Error("still offline"));
    await flush();
    expect(errors.map((e) => (e as Error).message)).toEqual(["offline"]);
    at(10);
    clock.tick();
    server.answer();
    await flush();
    expect(server.sent).toEqual([0, 5, 10]);
    expect(errors.at(-1)).toBeNull();
  });

  it("sends a last report on stop and nothing after", async () => {
    const { clock, server, reporter, at } = setup();
    reporter.playing();
    server.answer();
    await flush();
    at(8);
    reporter.stop();
    expect(server.sent).toEqual([0, 8]);
    expect(clock.running()).toBe(0);
    server.answer();
    await reporter.settled();
    at(9);
    reporter.playing();
    reporter.report();
    expect(server.sent).toEqual([0, 8]);
  });

  it("sends nothing on stop when the learner never played (a page opened and left)", () => {
    const { server, reporter, at } = setup();
    at(42);
    reporter.stop();
    expect(server.sent).toEqual([]);
  });

  it("ignores positions a player cannot be at", () => {
    const { server, reporter, at } = setup();
    at(Number.NaN);
    reporter.report();
    at(-1);
    reporter.report();
    expect(server.sent).toEqual([]);
  });
});

describe("resumePoint", () => {
  it("resumes where the learner left off", () => {
    expect(resumePoint(42.5, 600)).toBe(42.5);
  });
  it("starts from the beginning when never watched or watched to the end", () => {
    expect(resumePoint(null, 600)).toBe(0);
    expect(resumePoint(0, 600)).toBe(0);
    expect(resumePoint(599.5, 600)).toBe(0);
    expect(resumePoint(600, 600)).toBe(0);
  });
  it("keeps a position of a lecture without a known duration", () => {
    expect(resumePoint(30, 0)).toBe(30);
  });
});

describe("formatDuration", () => {
  it("reads like people write durations", () => {
    expect(formatDuration(12.4)).toBe("12 s");
    expect(formatDuration(250)).toBe("4 min 10 s");
    expect(formatDuration(600)).toBe("10 min");
    expect(formatDuration(3900)).toBe("1 h 05 min");
  });
});

describe("messageOf", () => {
  it("names the fields a refused request body got wrong", async () => {
    const { ApiError, messageOf } = await import("../src/lib/errors");
    const refused = new ApiError(400, "invalid_input", "request body is invalid", {
      fields: [{ loc: "media_url", msg: "String should match pattern '^https?://'" }],
    });
    expect(messageOf(refused)).toBe("request body is invalid (media_url: String should match pattern '^https?://')");
    expect(messageOf(new ApiError(409, "conflict", "this costs 50 coins and you have 0"))).toBe(
      "this costs 50 coins and you have 0",
    );
  });
});
