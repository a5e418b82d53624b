-- Profiles: a short bio, and a picture (re-encoded by the server to a 256x256 PNG, kept in Postgres so every
-- node serves it); avatar_version changes with each new picture (its URL changes, caches stay right).
ALTER TABLE users ADD COLUMN bio text NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN avatar_version integer;
CREATE TABLE avatars (
    user_id    uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    image      bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
