-- Search over the forums (core_api/search/, kind "posts"): as 0027 does for chat, a generated tsvector column
-- kept up to date by Postgres itself and a GIN index on it, for topic titles (weight A, in English) and post
-- bodies (English). The posts' index leaves out deleted posts (a partial index): search never returns them,
-- and a deletion takes the post out of it.
--
-- Adding a stored column rewrites the table: on large forums this migration takes a while.

ALTER TABLE forum_topics ADD COLUMN search tsvector GENERATED ALWAYS AS (
    setweight(to_tsvector('english'::regconfig, title), 'A')
) STORED;
CREATE INDEX forum_topics_search ON forum_topics USING gin (search);

ALTER TABLE forum_posts ADD COLUMN search tsvector GENERATED ALWAYS AS (
    to_tsvector('english'::regconfig, body)
) STORED;
CREATE INDEX forum_posts_search ON forum_posts USING gin (search) WHERE deleted_at IS NULL;
