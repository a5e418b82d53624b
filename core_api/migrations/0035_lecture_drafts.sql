-- A live session's recording in a course becomes a lecture draft: seen by the course's staff only, made a
-- lecture (its video transcoded to the HLS ladder first) when they publish it (media/drafts.py).
CREATE TABLE lecture_drafts (
    id               uuid PRIMARY KEY,
    course_id        uuid NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    -- The recording (a finished upload); cleared when the publishing job consumes it.
    upload_id        uuid UNIQUE REFERENCES uploads (id) ON DELETE SET NULL,
    live_session_id  uuid REFERENCES live_sessions (id) ON DELETE SET NULL,
    title            text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    duration_s       double precision NOT NULL CHECK (duration_s >= 0),
    created_by       uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    lecture_id       uuid REFERENCES lectures (id) ON DELETE SET NULL,
    published_at     timestamptz
);
CREATE INDEX lecture_drafts_course ON lecture_drafts (course_id, created_at);
