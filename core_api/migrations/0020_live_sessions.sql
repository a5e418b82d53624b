-- Live sessions (live/): a room's scheduled live lessons. The media itself lives only in memory on the
-- node that carries the session; this table is the schedule, the session's state and the reminder claim.
--
-- reminded_at is the once-only claim of the "starts soon" reminder: every node's reminder loop runs
-- UPDATE ... SET reminded_at = now() WHERE reminded_at IS NULL ... FOR UPDATE SKIP LOCKED, so exactly one
-- node sends each session's reminders, in the transaction that claims it.

CREATE TABLE live_sessions (
    id               uuid PRIMARY KEY,
    room_id          uuid NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    course_id        uuid REFERENCES courses (id) ON DELETE SET NULL,
    title            text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    starts_at        timestamptz NOT NULL,
    duration_minutes integer NOT NULL CHECK (duration_minutes BETWEEN 1 AND 1440),
    host_id          uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_by       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at       timestamptz NOT NULL DEFAULT now(),
    cancelled_at     timestamptz,
    cancelled_by     uuid REFERENCES users (id) ON DELETE SET NULL,
    reminded_at      timestamptz,
    went_live_at     timestamptz,
    ended_at         timestamptz
);
CREATE INDEX live_sessions_room ON live_sessions (room_id, starts_at, id);
CREATE INDEX live_sessions_created_by ON live_sessions (created_by, created_at);
-- The reminder loop's scan: sessions still to remind, by start.
CREATE INDEX live_sessions_to_remind ON live_sessions (starts_at) WHERE reminded_at IS NULL AND cancelled_at IS NULL;
