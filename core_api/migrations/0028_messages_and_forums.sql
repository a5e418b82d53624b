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

-- Forums (issue 18): discussion boards of a community or a course. A topic's opening post is its first
-- forum_posts row (depth 0, no parent); every reply names the post it answers (depth = parent's + 1), so a
-- topic is a tree the client draws from (parent_id, depth). Votes are per post, one per user (+1 or -1);
-- a post's score is kept beside it in the vote's transaction.
CREATE TABLE forum_topics (
    id               uuid PRIMARY KEY,
    community_id     uuid REFERENCES communities (id) ON DELETE CASCADE,
    course_id        uuid REFERENCES courses (id) ON DELETE CASCADE,
    author_id        uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title            text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_activity_at timestamptz NOT NULL DEFAULT now(),
    pinned_at        timestamptz,
    locked_at        timestamptz,
    accepted_post_id uuid,
    reply_count      integer NOT NULL DEFAULT 0 CHECK (reply_count >= 0),
    CHECK ((community_id IS NULL) <> (course_id IS NULL))
);
CREATE INDEX forum_topics_community ON forum_topics (community_id, last_activity_at DESC, id DESC)
    WHERE community_id IS NOT NULL;
CREATE INDEX forum_topics_course ON forum_topics (course_id, last_activity_at DESC, id DESC)
    WHERE course_id IS NOT NULL;

CREATE TABLE forum_posts (
    id         uuid PRIMARY KEY,
    topic_id   uuid NOT NULL REFERENCES forum_topics (id) ON DELETE CASCADE,
    parent_id  uuid REFERENCES forum_posts (id) ON DELETE CASCADE,
    author_id  uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    depth      integer NOT NULL CHECK (depth >= 0),
    body       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    edited_at  timestamptz,
    deleted_at timestamptz,
    deleted_by uuid REFERENCES users (id) ON DELETE SET NULL,
    score      integer NOT NULL DEFAULT 0,
    CHECK ((depth = 0) = (parent_id IS NULL))
);
CREATE INDEX forum_posts_topic ON forum_posts (topic_id, created_at, id);
CREATE INDEX forum_posts_author ON forum_posts (author_id, created_at);
CREATE UNIQUE INDEX forum_posts_one_opening ON forum_posts (topic_id) WHERE depth = 0;
ALTER TABLE forum_topics ADD CONSTRAINT forum_topics_accepted
    FOREIGN KEY (accepted_post_id) REFERENCES forum_posts (id) ON DELETE SET NULL;

CREATE TABLE forum_votes (
    post_id uuid NOT NULL REFERENCES forum_posts (id) ON DELETE CASCADE,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    value   smallint NOT NULL CHECK (value IN (-1, 1)),
    PRIMARY KEY (post_id, user_id)
);
