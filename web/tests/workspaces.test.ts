import { describe, expect, it } from "vitest";

import { colourFor, languageOf, pathProblem, RunFeed, verdictOf, type Execution, type Run } from "../src/lib/workspaces";

const execution = (over: Partial<Execution> = {}): Execution => ({
  id: "e1",
  state: "finished",
  status: "ok",
  stdout: "",
  stderr: "",
  exit_code: 0,
  wall_ms: 12,
  truncated: false,
  message: null,
  compile: null,
  ...over,
});

const run = (id: string, created_at: string, over: Partial<Execution> = {}, workspace_id = "w1"): Run => ({
  id,
  workspace_id,
  entry: "main.py",
  user_id: "u1",
  created_at,
  execution: execution(over),
});

describe("pathProblem", () => {
  it("accepts what the server accepts", () => {
    expect(pathProblem("main.py")).toBeNull();
    expect(pathProblem("src/util/helpers.cpp")).toBeNull();
    expect(pathProblem("_a-b.c")).toBeNull();
  });

  it("refuses what the server refuses, saying why", () => {
    expect(pathProblem("")).toMatch(/1 to 200/);
    expect(pathProblem("x".repeat(201))).toMatch(/1 to 200/);
    expect(pathProblem("../etc/passwd")).toMatch(/names of letters/);
    expect(pathProblem(".hidden")).toMatch(/names of letters/);
    expect(pathProblem("a//b")).toMatch(/names of letters/);
    expect(pathProblem("with space.py")).toMatch(/names of letters/);
    expect(pathProblem("a/b/c/d/e/f/g/h/i")).toMatch(/up to 8/);
  });

  it("refuses a name that is taken", () => {
    expect(pathProblem("main.py", ["main.py", "x.py"])).toBe("There is already a file named main.py.");
  });
});

describe("languageOf and colourFor", () => {
  it("picks the editor's language by extension", () => {
    expect(languageOf("main.py")).toBe("python");
    expect(languageOf("index.js")).toBe("javascript");
    expect(languageOf("greet.hpp")).toBe("cpp");
    expect(languageOf("main.c")).toBe("cpp");
    expect(languageOf("README")).toBe("text");
  });

  it("gives a user the same colour every time, and different users usually different ones", () => {
    expect(colourFor("ada")).toEqual(colourFor("ada"));
    expect(colourFor("ada").color).not.toBe(colourFor("grace").color);
  });
});

describe("verdictOf", () => {
  it("says how a run stands or ended", () => {
    expect(verdictOf(execution({ state: "queued", status: null }))).toBe("Queued…");
    expect(verdictOf(execution({ state: "running", status: null }))).toBe("Running…");
    expect(verdictOf(execution())).toBe("Finished (exit code 0, 12 ms)");
    expect(verdictOf(execution({ status: "time_limit_exceeded", exit_code: null, wall_ms: 10000 }))).toBe(
      "Time limit exceeded (10000 ms)",
    );
    expect(verdictOf(execution({ status: "compile_error", exit_code: null, wall_ms: null }))).toBe("Compile error");
  });
});

describe("RunFeed", () => {
  it("streams output as it arrives, merging chunks of one stream", () => {
    const feed = new RunFeed("w1");
    feed.addRun(run("r1", "2026-12-02T10:00:00Z", { state: "running", status: null }));
    feed.output({ run_id: "r1", workspace_id: "w1", stream: "stdout", text: "one\n" });
    feed.output({ run_id: "r1", workspace_id: "w1", stream: "stdout", text: "two\n" });
    feed.output({ run_id: "r1", workspace_id: "w1", stream: "stderr", text: "oops\n" });
    expect(RunFeed.text(feed.get("r1")!)).toEqual([
      { stream: "stdout", text: "one\ntwo\n" },
      { stream: "stderr", text: "oops\n" },
    ]);
    expect(verdictOf(feed.get("r1")!.execution!)).toBe("Running…");
  });

  it("says a queued run is running once its output is heard, in either order", () => {
    const feed = new RunFeed("w1");
    feed.addRun(run("r1", "2026-12-02T10:00:00Z", { state: "queued", status: null }));
    expect(verdictOf(feed.get("r1")!.execution!)).toBe("Queued…");
    feed.output({ run_id: "r1", workspace_id: "w1", stream: "stdout", text: "Your name? " });
    expect(verdictOf(feed.get("r1")!.execution!)).toBe("Running…");
    feed.output({ run_id: "r2", workspace_id: "w1", stream: "stdout", text: "x" });
    feed.addRun(run("r2", "2026-12-02T10:01:00Z", { state: "queued", status: null }));
    expect(verdictOf(feed.get("r2")!.execution!)).toBe("Running…");
  });

  it("ignores other workspaces' events", () => {
    const feed = new RunFeed("w1");
    expect(feed.output({ run_id: "r9", workspace_id: "w2", stream: "stdout", text: "x" })).toBe(false);
    feed.addRun(run("r8", "2026-12-02T10:00:00Z", {}, "w2"));
    expect(feed.list()).toEqual([]);
  });

  it("takes output heard before the run is known (another tab's run), then its details", () => {
    const feed = new RunFeed("w1");
    feed.output({ run_id: "r1", workspace_id: "w1", stream: "stdout", text: "hi\n" });
    feed.addRun(run("r1", "2026-12-02T10:00:00Z", { state: "running", status: null }));
    expect(feed.get("r1")!.entry).toBe("main.py");
    expect(RunFeed.text(feed.get("r1")!)).toEqual([{ stream: "stdout", text: "hi\n" }]);
  });

  it("shows the stored result once finished, and a late 'running' answer does not undo it", () => {
    const feed = new RunFeed("w1");
    feed.output({ run_id: "r1", workspace_id: "w1", stream: "stdout", text: "partial" });
    feed.finished({
      run_id: "r1",
      workspace_id: "w1",
      entry: "main.cpp",
      user_id: "u2",
      execution: execution({ stdout: "partial and the rest\n", compile: { stdout: "", stderr: "warning: x\n" } }),
    });
    feed.addRun(run("r1", "2026-12-02T10:00:00Z", { state: "running", status: null }));
    const view = feed.get("r1")!;
    expect(view.execution!.state).toBe("finished");
    expect(RunFeed.text(view)).toEqual([
      { stream: "compile", text: "warning: x\n" },
      { stream: "stdout", text: "partial and the rest\n" },
    ]);
    // Output arriving after the result is not added twice.
    feed.output({ run_id: "r1", workspace_id: "w1", stream: "stdout", text: "late" });
    expect(RunFeed.text(view)[1]?.text).toBe("partial and the rest\n");
  });

  it("lists runs newest first", () => {
    const feed = new RunFeed("w1");
    feed.addRun(run("old", "2026-12-02T10:00:00Z"));
    feed.addRun(run("new", "2026-12-02T11:00:00Z"));
    feed.addRun(run("mid", "2026-12-02T10:30:00Z"));
    expect(feed.list().map((r) => r.id)).toEqual(["new", "mid", "old"]);
  });
});
