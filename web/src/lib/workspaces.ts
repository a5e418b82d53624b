/**
 * Workspaces and their runs: the REST calls of the workspace screens (docs/collaborative-ide.md), and the
 * pure logic they need — file paths as the server accepts them, a user's cursor colour, and `RunFeed`, which
 * folds the live `run:output` / `run:finished` events and the REST answers into one view of each run.
 */
import type { ApiClient, Page } from "./api";
import type { LiveConnection } from "./live";

export type Access = "edit" | "read";

export interface Workspace {
  id: string;
  name: string;
  language: string;
  entry: string;
  room_id: string | null;
  room_access: Access;
  created_by: string;
  created_at: string;
  my_access: Access;
  can_manage: boolean;
  editor_path: string;
}

export interface Template {
  language: string;
  entry: string;
  files: Record<string, string>;
}

export interface Execution {
  id: string;
  state: "queued" | "running" | "finished";
  status: string | null;
  stdout: string;
  stderr: string;
  exit_code: number | null;
  wall_ms: number | null;
  truncated: boolean;
  message: string | null;
  compile: { stdout: string; stderr: string } | null;
}

export interface Run {
  id: string;
  workspace_id: string;
  entry: string;
  user_id: string;
  created_at: string;
  execution: Execution;
}

export const listWorkspaces = (api: ApiClient, cursor: string | null): Promise<Page<Workspace>> =>
  api.get<Page<Workspace>>("/workspaces", { limit: 20, cursor });

export const getWorkspace = (api: ApiClient, id: string): Promise<Workspace> =>
  api.get<Workspace>(`/workspaces/${encodeURIComponent(id)}`);

export const listTemplates = async (api: ApiClient): Promise<Template[]> =>
  (await api.get<{ items: Template[] }>("/workspaces/templates")).items;

export const createWorkspace = (api: ApiClient, body: { name: string; language: string }): Promise<Workspace> =>
  api.post<Workspace>("/workspaces", body);

export const listRuns = (api: ApiClient, id: string): Promise<Page<Run>> =>
  api.get<Page<Run>>(`/workspaces/${encodeURIComponent(id)}/runs`, { limit: 20 });

export const startRun = (
  api: ApiClient,
  id: string,
  body: { stdin: string; interactive?: boolean; entry?: string },
): Promise<Run> => api.post<Run>(`/workspaces/${encodeURIComponent(id)}/runs`, body);

/** `run:unfollowed`: the user may no longer see the workspace, so its runs are no longer heard. */
export interface UnfollowedEvent {
  workspace_id: string;
  reason: string;
  message: string;
}

/**
 * Joins the workspace's run channel (`run:follow`): this connection then hears `run:output` and `run:finished`
 * of every run of the workspace, whoever starts it. Rejects with the server's refusal.
 */
export async function followRuns(live: Pick<LiveConnection, "emit">, workspaceId: string): Promise<void> {
  await live.emit("run:follow", { workspace_id: workspaceId });
}

/** Leaves the workspace's run channel (best effort: a closed connection has left it anyway). */
export function unfollowRuns(live: Pick<LiveConnection, "emit">, workspaceId: string): void {
  live.emit("run:unfollow", { workspace_id: workspaceId }).catch(() => {});
}

const SEGMENT = /^[A-Za-z0-9_][A-Za-z0-9._-]*$/;

/** Why the server would refuse `path` as a file path, or null when it is fine (collab_ide/schemas.py). */
export function pathProblem(path: string, existing: Iterable<string> = []): string | null {
  if (path.length === 0 || path.length > 200) return "A file path has 1 to 200 characters.";
  const segments = path.split("/");
  if (segments.length > 8 || !segments.every((s) => SEGMENT.test(s))) {
    return "A file path is up to 8 '/'-separated names of letters, digits, '.', '_' and '-' (not starting with '.' or '-').";
  }
  for (const other of existing) if (other === path) return `There is already a file named ${path}.`;
  return null;
}

/** The editor's language for a file, by its extension. */
export function languageOf(path: string): "python" | "javascript" | "cpp" | "text" {
  const ext = path.slice(path.lastIndexOf(".") + 1).toLowerCase();
  if (ext === "py") return "python";
  if (["js", "mjs", "cjs", "ts"].includes(ext)) return "javascript";
  if (["c", "h", "cc", "cpp", "cxx", "hpp", "hh"].includes(ext)) return "cpp";
  return "text";
}

/** A stable colour for a user (the same in every tab), dark enough for white text and light backgrounds. */
export function colourFor(userId: string): { color: string; light: string } {
  let hash = 0;
  for (const char of userId) hash = (hash * 31 + char.charCodeAt(0)) >>> 0;
  const hue = hash % 360;
  return { color: `hsl(${hue} 70% 35%)`, light: `hsl(${hue} 70% 35% / 0.2)` };
}

const VERDICTS: Record<string, string> = {
  ok: "Finished",
  compile_error: "Compile error",
  runtime_error: "Runtime error",
  time_limit_exceeded: "Time limit exceeded",
  memory_limit_exceeded: "Memory limit exceeded",
  output_limit_exceeded: "Output limit exceeded",
  internal_error: "Internal error",
};

/** One line for how a run stands or ended, e.g. "Finished (exit code 0, 31 ms)". */
export function verdictOf(execution: Execution): string {
  if (execution.state !== "finished") return execution.state === "queued" ? "Queued…" : "Running…";
  const name = VERDICTS[execution.status ?? ""] ?? execution.status ?? "Finished";
  const parts: string[] = [];
  if (execution.exit_code !== null) parts.push(`exit code ${execution.exit_code}`);
  if (execution.wall_ms !== null) parts.push(`${execution.wall_ms} ms`);
  return parts.length > 0 ? `${name} (${parts.join(", ")})` : name;
}

export type Stream = "stdout" | "stderr" | "compile";

export interface OutputEvent {
  run_id: string;
  workspace_id: string;
  stream: Stream;
  text: string;
}

export interface FinishedEvent {
  run_id: string;
  workspace_id: string;
  entry: string;
  user_id: string;
  execution: Execution;
}

/** A run as the screen shows it: the chunks heard live, then (once finished) the stored result. */
export interface RunView {
  id: string;
  entry: string;
  user_id: string;
  created_at: string;
  chunks: { stream: Stream; text: string }[];
  execution: Execution | null;
}

/**
 * The runs of one workspace, newest first: history from REST, output from `run:output` as it arrives, the
 * verdict from `run:finished`. Events may come before the REST answer that announces their run (another
 * tab's run), and a run's final result replaces what was streamed (it holds everything, within its cap).
 */
export class RunFeed {
  private runs = new Map<string, RunView>();

  constructor(private readonly workspaceId: string) {}

  /** Newest first. */
  list(): RunView[] {
    return [...this.runs.values()].sort((a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : 0));
  }

  get(id: string): RunView | undefined {
    return this.runs.get(id);
  }

  private ensure(id: string, entry = "", userId = "", createdAt = new Date().toISOString()): RunView {
    let view = this.runs.get(id);
    if (!view) {
      view = { id, entry, user_id: userId, created_at: createdAt, chunks: [], execution: null };
      this.runs.set(id, view);
    }
    return view;
  }

  /** A run from REST (history, or the answer to starting one). */
  addRun(run: Run): void {
    if (run.workspace_id !== this.workspaceId) return;
    const view = this.ensure(run.id, run.entry, run.user_id, run.created_at);
    view.entry = run.entry;
    view.user_id = run.user_id;
    view.created_at = run.created_at;
    if (run.execution.state === "finished" || view.execution?.state !== "finished") view.execution = run.execution;
    this.markRunning(view);
  }

  /** Output was heard, so the run is running whatever an earlier answer said ("queued"). */
  private markRunning(view: RunView): void {
    if (view.chunks.length > 0 && view.execution?.state === "queued") {
      view.execution = { ...view.execution, state: "running" };
    }
  }

  /** `run:output`: returns whether it was this workspace's. */
  output(event: OutputEvent): boolean {
    if (event.workspace_id !== this.workspaceId) return false;
    const view = this.ensure(event.run_id);
    if (view.execution?.state === "finished") return true; // the full result is already shown
    const last = view.chunks[view.chunks.length - 1];
    if (last && last.stream === event.stream) last.text += event.text;
    else view.chunks.push({ stream: event.stream, text: event.text });
    this.markRunning(view);
    return true;
  }

  /** `run:finished`: returns whether it was this workspace's. */
  finished(event: FinishedEvent): boolean {
    if (event.workspace_id !== this.workspaceId) return false;
    const view = this.ensure(event.run_id, event.entry, event.user_id);
    if (!view.entry) view.entry = event.entry;
    if (!view.user_id) view.user_id = event.user_id;
    view.execution = event.execution;
    return true;
  }

  /** What to show as a run's output: streamed chunks while it runs, the stored result once finished. */
  static text(view: RunView): { stream: Stream; text: string }[] {
    const ex = view.execution;
    if (!ex || ex.state !== "finished") return view.chunks;
    const out: { stream: Stream; text: string }[] = [];
    if (ex.compile && (ex.compile.stdout || ex.compile.stderr)) {
      out.push({ stream: "compile", text: ex.compile.stdout + ex.compile.stderr });
    }
    if (ex.stdout) out.push({ stream: "stdout", text: ex.stdout });
    if (ex.stderr) out.push({ stream: "stderr", text: ex.stderr });
    if (out.length === 0 && view.chunks.length > 0) return view.chunks;
    return out;
  }
}
