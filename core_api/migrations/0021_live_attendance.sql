-- Attendance of live sessions (live/attendance.py): who joined a session, from when to when.
--
-- One row per stretch of presence: a connection's live:join opens it (left_at NULL), its live:leave, its
-- disconnect, the session's end or the node's shutdown closes it. Someone with two tabs has two overlapping
-- rows (the report merges them). Past STUDYHALL_LIVE_ATTENDANCE_MAX_INTERVALS rows for one user in one
-- session, a new join reopens the user's latest row instead of adding one, so a client joining and leaving
-- in a loop cannot grow the table without bound.

CREATE TABLE live_attendance (
    id         uuid PRIMARY KEY,
    session_id uuid NOT NULL REFERENCES live_sessions (id) ON DELETE CASCADE,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    joined_at  timestamptz NOT NULL,
    left_at    timestamptz,
    CHECK (left_at IS NULL OR left_at >= joined_at)
);
CREATE INDEX live_attendance_session_user ON live_attendance (session_id, user_id, joined_at);
-- Closing a session's (or a node's) open rows.
CREATE INDEX live_attendance_open ON live_attendance (session_id) WHERE left_at IS NULL;
