-- Community chat additions.

-- rev counts a message's changes (edit, delete, reactions); updates carry it so a client that gets two
-- updates of one message out of order (they were committed on different nodes) keeps the newer one.
ALTER TABLE chat_messages ADD COLUMN rev bigint NOT NULL DEFAULT 0;

-- The per-user rate limit and slow mode look at a sender's recent messages.
CREATE INDEX chat_messages_author_recent ON chat_messages (author_id, created_at DESC);
