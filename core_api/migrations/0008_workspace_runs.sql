-- A workspace's "Run": the server's copy of its files executed in the sandbox, as an execution. The run
-- keeps which workspace, entry and execution it was; its output and result live on the execution.
CREATE TABLE workspace_runs (
    id           uuid PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    execution_id uuid NOT NULL UNIQUE REFERENCES executions (id) ON DELETE CASCADE,
    user_id      uuid NOT NULL REFERENCES users (id),
    entry        text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workspace_runs_history ON workspace_runs (workspace_id, created_at DESC, id DESC);
