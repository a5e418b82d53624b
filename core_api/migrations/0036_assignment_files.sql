-- Files learners attach to assignment submissions (core_api/submission_files.py); the bytes live in media
-- storage under files/<id>.
CREATE TABLE submission_files (
    id            uuid PRIMARY KEY,
    submission_id uuid NOT NULL REFERENCES submissions (id) ON DELETE CASCADE,
    owner_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    filename      text NOT NULL CHECK (length(filename) BETWEEN 1 AND 200),
    content_type  text NOT NULL,
    size          bigint NOT NULL CHECK (size >= 0),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX submission_files_submission ON submission_files (submission_id, created_at);
CREATE INDEX submission_files_owner ON submission_files (owner_id, created_at);
