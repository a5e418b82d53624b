-- Display names that cannot pass for someone else's (core_api/profile.py). Two names are "confusably
-- equal" when their keys are: NFKC-normalised, lower-cased, with white space and invisible format
-- characters (zero-width space, joiners, marks, BOM, soft hyphen, ...) removed. The same function serves
-- the check (PATCH /me) and the index that keeps it one lookup on a large users table. Names are compared
-- as they stand now: older accounts whose names already collide keep them (nothing is renamed for them).

CREATE FUNCTION display_name_key(name text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT regexp_replace(
        lower(normalize(name, NFKC)),
        '[[:space:]\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164\ufeff\uffa0]',
        '', 'g')
$$;

CREATE INDEX users_display_name_key ON users (display_name_key(display_name));

-- The audit log by actor: the admin screen's filter, and the count of a user's renames in the last day.
CREATE INDEX audit_log_actor ON audit_log (actor_id, created_at DESC, id DESC);
