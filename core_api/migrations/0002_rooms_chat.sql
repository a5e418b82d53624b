-- Group rooms and their chat. A room's last_seq is the per-room message counter: a sender increments
-- it in the same transaction as the insert, so seq is gap-free and unique even across nodes.

CREATE TABLE rooms (
    id           uuid PRIMARY KEY,
    name         text NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('study', 'watch', 'ide', 'contest', 'live')),
    visibility   text NOT NULL CHECK (visibility IN ('public', 'community', 'private')),
    community_id uuid REFERENCES communities (id) ON DELETE CASCADE,
    course_id    uuid REFERENCES courses (id) ON DELETE SET NULL,
    created_by   uuid NOT NULL REFERENCES users (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    archived_at  timestamptz,
    last_seq     bigint NOT NULL DEFAULT 0,
    slow_mode_s  integer NOT NULL DEFAULT 0 CHECK (slow_mode_s >= 0),
    CHECK (visibility <> 'community' OR community_id IS NOT NULL)
);
CREATE INDEX rooms_page ON rooms (created_at, id);
CREATE INDEX rooms_community ON rooms (community_id);

-- Membership and room roles. A ban keeps the row (banned_at set) so the user cannot rejoin;
-- a mute lasts until muted_until.
CREATE TABLE room_members (
    room_id     uuid NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role        text NOT NULL CHECK (role IN ('host', 'moderator', 'member')),
    joined_at   timestamptz NOT NULL DEFAULT now(),
    invited_by  uuid REFERENCES users (id) ON DELETE SET NULL,
    muted_until timestamptz,
    banned_at   timestamptz,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX room_members_user ON room_members (user_id);

CREATE TABLE chat_messages (
    id            uuid PRIMARY KEY,
    room_id       uuid NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    seq           bigint NOT NULL,
    author_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_msg_id text NOT NULL,
    body          text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    edited_at     timestamptz,
    deleted_at    timestamptz,
    deleted_by    uuid REFERENCES users (id) ON DELETE SET NULL,
    UNIQUE (room_id, seq),
    UNIQUE (room_id, author_id, client_msg_id)
);

CREATE TABLE chat_reactions (
    message_id uuid NOT NULL REFERENCES chat_messages (id) ON DELETE CASCADE,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    emoji      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, user_id, emoji)
);
