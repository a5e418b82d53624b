-- Direct messages (issue 18): a conversation between two users or a small group is a private room of
-- kind 'dm' whose members are its participants. Chat, seq order, history, edits, reactions and the live
-- delivery are the rooms' own; this migration adds what a conversation needs beyond a room:
--
-- * rooms.dm_key: the sorted participant ids, unique, so "find or create the conversation of these
--   users" is one INSERT ... ON CONFLICT DO NOTHING and two concurrent requests find the same room;
-- * room_members.last_read_seq: how far a member has read, for unread counts (every room has it);
-- * user_blocks: who refuses to be messaged by whom.

ALTER TABLE rooms DROP CONSTRAINT rooms_kind_check;
ALTER TABLE rooms ADD CONSTRAINT rooms_kind_check
    CHECK (kind IN ('study', 'watch', 'ide', 'contest', 'live', 'dm'));
ALTER TABLE rooms ADD COLUMN dm_key text;
ALTER TABLE rooms ADD CONSTRAINT rooms_dm_key_unique UNIQUE (dm_key);
ALTER TABLE rooms ADD CONSTRAINT rooms_dm_shape
    CHECK ((kind = 'dm') = (dm_key IS NOT NULL) AND (kind <> 'dm' OR visibility = 'private'));
-- The conversations one user started, newest first: the rate of new conversations is counted here.
CREATE INDEX rooms_dm_started ON rooms (created_by, created_at) WHERE kind = 'dm';

ALTER TABLE room_members ADD COLUMN last_read_seq bigint NOT NULL DEFAULT 0 CHECK (last_read_seq >= 0);

CREATE TABLE user_blocks (
    blocker_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    blocked_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (blocker_id, blocked_id),
    CHECK (blocker_id <> blocked_id)
);
CREATE INDEX user_blocks_blocked ON user_blocks (blocked_id);
