-- Executions: programs users ran in the sandbox (POST /executions) and what came of them.
-- The row is written before the job is queued, so the worker that runs it (this node or a Celery
-- worker) always finds it; `result` holds the finished execution's status, output and measurements.

CREATE TABLE executions (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    language    text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('run', 'judge')),
    state       text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running', 'finished')),
    result      jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz,
    finished_at timestamptz,
    CHECK ((state = 'finished') = (result IS NOT NULL))
);
CREATE INDEX executions_by_user ON executions (user_id, created_at DESC);
