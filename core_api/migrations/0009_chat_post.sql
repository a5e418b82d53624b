-- chat:send in one statement: the sender's membership, an earlier message with the same client_msg_id,
-- the room's next seq, the pace checks and the insert. Claiming the seq takes the room's row lock until
-- commit, and every other sender in the room waits for it. A send used to hold that lock across four client round
-- trips (claim, rate check, insert, commit); when the server was busy broadcasting, each round trip
-- waited for the event loop too, so senders queued behind the lock for seconds although the CPU was
-- not full. Here the claim, the checks and the insert run inside the database, and in autocommit the
-- commit comes with the same round trip.
--
-- Each statement inside a plpgsql function takes a new snapshot (READ COMMITTED), so the checks that run
-- after the UPDATE see every message committed by the sender that held the lock before: the per-user
-- rate limit and slow mode stay exact for concurrent sends in one room, as they were.
--
-- Refusals raise, so the claimed seq rolls back with them (seq stays gap-free); the caller turns them
-- into error acks. SQLSTATEs (class SH, ours): SH401 the author is not an active member of the room (or
-- the room does not exist), SH404 the room does not exist or is archived (the caller looks which, and
-- which error the author may see), SH403 muted, SH429 rate limit,
-- SH420 slow mode, SH409 the same client_msg_id committed while this send waited for the lock. DETAIL
-- is a JSON object with the database clock (now) and what the refusal needs to say how long to wait.
--
-- The result is the message as chat_store's queries select it, plus fresh: false when this author had
-- already sent client_msg_id in the room (the earlier message is returned and nothing is written).
CREATE FUNCTION chat_post(
    p_room uuid,
    p_id uuid,
    p_author uuid,
    p_client_msg_id text,
    p_body text,
    p_rate_window_s double precision,
    p_rate_count integer,
    p_admin boolean
) RETURNS TABLE (
    id uuid, room_id uuid, seq bigint, author_id uuid, display_name text, body text,
    created_at timestamptz, edited_at timestamptz, deleted_at timestamptz, deleted_by uuid, rev bigint,
    fresh boolean
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_seq bigint;
    v_slow integer;
    v_now timestamptz;
    v_role text;
    v_muted timestamptz;
    v_banned timestamptz;
    v_recent timestamptz[];
    v_last timestamptz;
BEGIN
    SELECT rm.role, rm.muted_until, rm.banned_at INTO v_role, v_muted, v_banned
        FROM room_members rm WHERE rm.room_id = p_room AND rm.user_id = p_author;
    IF NOT FOUND OR v_banned IS NOT NULL THEN
        RAISE EXCEPTION 'not a member' USING ERRCODE = 'SH401';
    END IF;

    RETURN QUERY
        SELECT m.id, m.room_id, m.seq, m.author_id, u.display_name, m.body, m.created_at, m.edited_at,
               m.deleted_at, m.deleted_by, m.rev, false
        FROM chat_messages m JOIN users u ON u.id = m.author_id
        WHERE m.room_id = p_room AND m.author_id = p_author AND m.client_msg_id = p_client_msg_id;
    IF FOUND THEN
        RETURN;
    END IF;

    UPDATE rooms r SET last_seq = r.last_seq + 1 WHERE r.id = p_room AND r.archived_at IS NULL
        RETURNING r.last_seq, r.slow_mode_s, clock_timestamp() INTO v_seq, v_slow, v_now;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no such open room' USING ERRCODE = 'SH404';
    END IF;

    IF v_muted IS NOT NULL AND v_muted > v_now THEN
        RAISE EXCEPTION 'muted' USING ERRCODE = 'SH403',
            DETAIL = json_build_object('now', v_now, 'muted_until', v_muted)::text;
    END IF;

    SELECT array_agg(t.created_at) INTO v_recent FROM (
        SELECT cm.created_at FROM chat_messages cm
        WHERE cm.author_id = p_author AND cm.created_at > v_now - make_interval(secs => p_rate_window_s)
        ORDER BY cm.created_at DESC LIMIT p_rate_count
    ) t;
    IF coalesce(array_length(v_recent, 1), 0) >= p_rate_count THEN
        RAISE EXCEPTION 'rate limited' USING ERRCODE = 'SH429',
            DETAIL = json_build_object('now', v_now, 'recent', v_recent)::text;
    END IF;

    -- Slow mode binds members below moderator; platform admins are exempt too.
    IF v_slow > 0 AND NOT p_admin AND v_role NOT IN ('moderator', 'host') THEN
        SELECT max(cm.created_at) INTO v_last FROM chat_messages cm
        WHERE cm.author_id = p_author AND cm.room_id = p_room AND cm.created_at > v_now - make_interval(secs => v_slow);
        IF v_last IS NOT NULL THEN
            RAISE EXCEPTION 'slow mode' USING ERRCODE = 'SH420',
                DETAIL = json_build_object('now', v_now, 'last', v_last, 'slow_mode_s', v_slow)::text;
        END IF;
    END IF;

    RETURN QUERY
        WITH m AS (
            INSERT INTO chat_messages (id, room_id, seq, author_id, client_msg_id, body, created_at)
            VALUES (p_id, p_room, v_seq, p_author, p_client_msg_id, p_body, v_now)
            ON CONFLICT (room_id, author_id, client_msg_id) DO NOTHING
            RETURNING chat_messages.id, chat_messages.room_id, chat_messages.seq, chat_messages.author_id,
                      chat_messages.body, chat_messages.created_at, chat_messages.edited_at,
                      chat_messages.deleted_at, chat_messages.deleted_by, chat_messages.rev
        )
        SELECT m.id, m.room_id, m.seq, m.author_id, u.display_name, m.body, m.created_at, m.edited_at,
               m.deleted_at, m.deleted_by, m.rev, true
        FROM m JOIN users u ON u.id = m.author_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'already sent' USING ERRCODE = 'SH409';
    END IF;
END
$$;
