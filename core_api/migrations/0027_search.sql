-- Full-text search (core_api/search/). Each searchable table carries a generated tsvector column, kept
-- up to date by Postgres itself on every insert and update (no trigger to forget), and a GIN index on it.
--
-- Courses, lectures and chat are indexed in English (stemmed: "algorithms" and "algorithm" meet); users by
-- name and email without stemming ('simple'), the parts of an email address split apart. Titles weigh A,
-- descriptions and email addresses B, for ranking.
--
-- Chat's indexes leave out deleted messages (partial indexes): search never returns them, and a deletion
-- takes the message out of them. The cost on chat writes (computing the vector and the GIN entry) is
-- measured in bench/RESULTS.md ("search"); GIN's pending list (fastupdate, on by default) keeps it off the
-- sender's path until the list is merged.
--
-- Adding a stored column rewrites the table: on a large chat_messages this migration takes a while.

ALTER TABLE courses ADD COLUMN search tsvector GENERATED ALWAYS AS (
    setweight(to_tsvector('english'::regconfig, title), 'A')
    || setweight(to_tsvector('english'::regconfig, description), 'B')
) STORED;
CREATE INDEX courses_search ON courses USING gin (search);

ALTER TABLE lectures ADD COLUMN search tsvector GENERATED ALWAYS AS (
    setweight(to_tsvector('english'::regconfig, title), 'A')
) STORED;
CREATE INDEX lectures_search ON lectures USING gin (search);

ALTER TABLE users ADD COLUMN search tsvector GENERATED ALWAYS AS (
    setweight(to_tsvector('simple'::regconfig, display_name), 'A')
    || setweight(to_tsvector('simple'::regconfig, translate(email, '@.+-_', '     ')), 'B')
) STORED;
CREATE INDEX users_search ON users USING gin (search);

ALTER TABLE chat_messages ADD COLUMN search tsvector GENERATED ALWAYS AS (
    to_tsvector('english'::regconfig, body)
) STORED;
CREATE INDEX chat_messages_search ON chat_messages USING gin (search) WHERE deleted_at IS NULL;
-- A searcher's own rooms, read room by room: this index holds each message's vector beside its room, so
-- Postgres tests the messages of the searcher's rooms without visiting the table (an index-only scan; 4-7x
-- faster over a million messages than reading the scattered rows, bench/RESULTS.md). It costs a copy of the
-- vectors (about a quarter of the table's size) and a second index entry per message written.
CREATE INDEX chat_messages_room_search ON chat_messages (room_id) INCLUDE (id, search) WHERE deleted_at IS NULL;

-- The query of a search: every word must match (AND), each as a prefix of a word in the text, compared both
-- stemmed ('english': "studies" finds "study") and as typed ('simple': "happy" finds "happy" although its
-- stem is "happi"). Words are reduced to letters, digits and underscores here, whatever the caller passed,
-- so no input can reach to_tsquery's own syntax; words English ignores ("the", "of") are dropped. With no word
-- left the result is NULL, which matches nothing.
CREATE FUNCTION search_query(words text[], min_prefix integer) RETURNS tsquery
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    q tsquery;  -- NULL until a word is kept: NULL matches nothing
    term tsquery;
    w text;
    suffix text;
BEGIN
    FOREACH w IN ARRAY coalesce(words, '{}') LOOP
        w := lower(regexp_replace(w, '[^[:alnum:]_]+', '', 'g'));
        CONTINUE WHEN w = '';
        suffix := CASE WHEN length(w) >= min_prefix THEN ':*' ELSE '' END;
        term := to_tsquery('english'::regconfig, '''' || w || '''' || suffix);
        CONTINUE WHEN numnode(term) = 0;
        IF term::text <> to_tsquery('simple'::regconfig, '''' || w || '''' || suffix)::text THEN
            -- Only when it differs: a repeated alternative would make the index look the word up twice.
            term := term || to_tsquery('simple'::regconfig, '''' || w || '''' || suffix);
        END IF;
        q := CASE WHEN q IS NULL THEN term ELSE q && term END;
    END LOOP;
    RETURN q;
END
$$;
