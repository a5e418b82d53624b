-- Sessions: one row per sign-in (a refresh-token family), so a user can list and end their sessions,
-- and an access token (which names its session) stops working as soon as its session is ended.
CREATE TABLE sessions (
    id           uuid PRIMARY KEY,  -- the refresh-token family's id
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz,
    user_agent   text NOT NULL DEFAULT '',
    address      text NOT NULL DEFAULT ''
);
CREATE INDEX sessions_user ON sessions (user_id, last_used_at DESC);

INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at, revoked_at)
SELECT family_id, (array_agg(user_id))[1], min(created_at), max(created_at), max(expires_at), max(revoked_at)
  FROM refresh_tokens GROUP BY family_id;

-- Password reset links: the token's hash only; single use, expiring.
CREATE TABLE password_resets (
    token_hash bytea PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX password_resets_user ON password_resets (user_id, created_at);
