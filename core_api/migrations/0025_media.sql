-- media/: resumable uploads (tus) and background jobs with progress.

CREATE TABLE uploads (
    id           uuid PRIMARY KEY,
    owner_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    length       bigint NOT NULL CHECK (length >= 0),
    -- The bytes stored so far as last recorded; the stored file itself is the authority (media/uploads.py).
    received     bigint NOT NULL DEFAULT 0 CHECK (received >= 0 AND received <= length),
    metadata     jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    expires_at   timestamptz,                -- unfinished uploads are removed after this
    -- One PATCH at a time: the writer holds a lease (renewed while it writes).
    writer       uuid,
    writer_until timestamptz
);
CREATE INDEX uploads_owner ON uploads (owner_id);
CREATE INDEX uploads_expiry ON uploads (expires_at) WHERE completed_at IS NULL;

CREATE TABLE jobs (
    id           uuid PRIMARY KEY,
    kind         text NOT NULL,
    owner_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    params       jsonb NOT NULL DEFAULT '{}',
    state        text NOT NULL DEFAULT 'queued'
                 CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    progress     double precision NOT NULL DEFAULT 0 CHECK (progress >= 0 AND progress <= 1),
    stage        text,
    error        text,
    result       jsonb,
    attempts     integer NOT NULL DEFAULT 0,
    -- Who runs it: a claim with a lease, renewed with each progress report; an expired lease means the
    -- runner died and the job may be claimed again (a job never runs twice at once).
    claimed_by   uuid,
    lease_until  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    finished_at  timestamptz
);
CREATE INDEX jobs_owner ON jobs (owner_id, created_at DESC);
CREATE INDEX jobs_pending ON jobs (created_at) WHERE state IN ('queued', 'running');
