-- Collaborative IDE: workspaces, their members, and each workspace's Yjs document as a snapshot plus
-- an append-only log of updates that compaction folds into the snapshot.

CREATE TABLE workspaces (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    language    text NOT NULL,
    entry       text NOT NULL,
    -- A workspace opened in a room: the room's members get room_access (its host and moderators edit).
    room_id     uuid REFERENCES rooms (id) ON DELETE CASCADE,
    room_access text NOT NULL DEFAULT 'edit' CHECK (room_access IN ('edit', 'read')),
    created_by  uuid NOT NULL REFERENCES users (id),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workspaces_page ON workspaces (created_at, id);
CREATE INDEX workspaces_room ON workspaces (room_id);
CREATE INDEX workspaces_creator ON workspaces (created_by);

-- Explicit access; it overrides what a room membership would give.
CREATE TABLE workspace_members (
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    access       text NOT NULL CHECK (access IN ('edit', 'read')),
    added_by     uuid REFERENCES users (id) ON DELETE SET NULL,
    added_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, user_id)
);
CREATE INDEX workspace_members_user ON workspace_members (user_id);

-- The compacted document: a Yjs update holding everything folded in so far. Written at creation (the
-- starter files), so the row always exists and compactions serialise on it (SELECT ... FOR UPDATE).
-- version grows by one per compaction: a node that knows the version it holds in memory skips re-reading it.
CREATE TABLE yjs_snapshots (
    workspace_id uuid PRIMARY KEY REFERENCES workspaces (id) ON DELETE CASCADE,
    state        bytea NOT NULL,
    version      bigint NOT NULL DEFAULT 1,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Updates not yet folded into the snapshot: one row per document per batch the server wrote, data being
-- its updates one after another, each preceded by its length (a lib0 variable-length integer). Loading
-- a document applies the snapshot and then every update here (Yjs updates are idempotent and
-- commutative, so order and overlap do not matter); compaction deletes exactly the rows it folded in,
-- never rows committed after it read.
CREATE TABLE yjs_updates (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    data         bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX yjs_updates_workspace ON yjs_updates (workspace_id, id);
