-- Analytics (issue 17, core_api/analytics/): rollup tables kept current by triggers, in the same transaction as
-- the write that changes them (an enrollment, a progress heartbeat, a graded quiz or assignment, a contest
-- submission), whichever code path makes it (REST, watch parties, the CLI, a restore). The dashboards read
-- only these tables, never the raw rows. Days and weeks are UTC; a week starts on Monday.
--
-- Everything is backfilled from the existing rows at the end of this migration, under locks that hold writes
-- back until the triggers are in place (so nothing is counted twice or missed). History that the raw tables do
-- not keep cannot be backfilled: a learner's activity before this migration is known only from the latest
-- progress report on each lecture (docs/analytics.md).

LOCK TABLE enrollments, lecture_progress, quiz_attempts, submissions, contest_submissions
    IN SHARE ROW EXCLUSIVE MODE;

-- --- tables --------------------------------------------------------------------------------------------------

-- Per course and UTC day: enrollments made that day (still enrolled), courses completed that day, and distinct
-- learners with progress that day.
CREATE TABLE analytics_course_days (
    course_id       uuid NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    day             date NOT NULL,
    enrollments     integer NOT NULL DEFAULT 0,
    completions     integer NOT NULL DEFAULT 0,
    active_learners integer NOT NULL DEFAULT 0,
    PRIMARY KEY (course_id, day)
);
CREATE INDEX analytics_course_days_day ON analytics_course_days (day);

-- Per course: learners enrolled now and those who completed it (so a dashboard need not add up every day).
CREATE TABLE analytics_course_totals (
    course_id uuid PRIMARY KEY REFERENCES courses (id) ON DELETE CASCADE,
    enrolled  integer NOT NULL DEFAULT 0,
    completed integer NOT NULL DEFAULT 0
);

-- Per course and week (its Monday): distinct learners with progress that week.
CREATE TABLE analytics_course_weeks (
    course_id       uuid NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    week            date NOT NULL,
    active_learners integer NOT NULL DEFAULT 0,
    PRIMARY KEY (course_id, week)
);

-- The last day and week a learner was counted active in a course: one row per learner and course, so counting
-- a learner once per day costs one index lookup (and a write only on their first heartbeat of the day).
CREATE TABLE analytics_course_learners (
    course_id uuid NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    user_id   uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    last_day  date NOT NULL,
    last_week date NOT NULL,
    PRIMARY KEY (course_id, user_id)
);

-- The same across the platform.
CREATE TABLE analytics_platform_days (
    day             date PRIMARY KEY,
    enrollments     integer NOT NULL DEFAULT 0,
    completions     integer NOT NULL DEFAULT 0,
    active_learners integer NOT NULL DEFAULT 0
);
CREATE TABLE analytics_platform_weeks (
    week            date PRIMARY KEY,
    active_learners integer NOT NULL DEFAULT 0
);
CREATE TABLE analytics_platform_learners (
    user_id   uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    last_day  date NOT NULL,
    last_week date NOT NULL
);

-- Per lecture, split into 8 shards by learner (the last byte of their id) so that many learners watching one
-- lecture do not queue on one row: learners with a progress row, learners who completed it, and the seconds
-- watched (each part of the lecture counted once per learner, as lecture_progress.watched_s). A read sums
-- the shards.
CREATE TABLE analytics_lecture_stats (
    lecture_id  uuid NOT NULL REFERENCES lectures (id) ON DELETE CASCADE,
    shard       smallint NOT NULL CHECK (shard BETWEEN 0 AND 7),
    course_id   uuid NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    viewers     integer NOT NULL DEFAULT 0,
    completions integer NOT NULL DEFAULT 0,
    watched_s   double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (lecture_id, shard)
);
CREATE INDEX analytics_lecture_stats_course ON analytics_lecture_stats (course_id);

-- Drop-off: `learners[b + 1]` is how many learners' furthest watched point lies in the twentieth b (0-19) of the
-- lecture; one row per lecture. Written only when a learner's furthest point moves into another twentieth.
CREATE TABLE analytics_lecture_reach (
    lecture_id uuid PRIMARY KEY REFERENCES lectures (id) ON DELETE CASCADE,
    course_id  uuid NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    learners   integer[] NOT NULL DEFAULT array_fill(0, ARRAY[20]) CHECK (cardinality(learners) = 20)
);
CREATE INDEX analytics_lecture_reach_course ON analytics_lecture_reach (course_id);

-- The score that counts per learner and item, as the gradebook counts it: a quiz's best submitted attempt, an
-- assignment's latest graded submission (`counted_at`, `counted_id`: that submission).
CREATE TABLE analytics_scores (
    item_id    uuid NOT NULL,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    course_id  uuid NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    kind       text NOT NULL CHECK (kind IN ('quiz', 'assignment')),
    max_points double precision NOT NULL CHECK (max_points > 0),
    score      double precision NOT NULL,
    counted_at timestamptz,
    counted_id uuid,
    PRIMARY KEY (item_id, user_id)
);

-- Their distribution per item: learners per tenth of the maximum (bucket 9 holds 90-100 %), and the sum of
-- their scores (for the mean). Kept by a trigger on analytics_scores.
CREATE TABLE analytics_score_buckets (
    item_id   uuid NOT NULL,
    bucket    smallint NOT NULL CHECK (bucket BETWEEN 0 AND 9),
    course_id uuid NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    learners  integer NOT NULL DEFAULT 0,
    score_sum double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (item_id, bucket)
);
CREATE INDEX analytics_score_buckets_course ON analytics_score_buckets (course_id);

-- Contest participation per contest and community: who submitted (one row each, with their counts) and the
-- totals.
CREATE TABLE analytics_contest_participants (
    contest_id   uuid NOT NULL REFERENCES contests (id) ON DELETE CASCADE,
    community_id uuid NOT NULL REFERENCES communities (id) ON DELETE CASCADE,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (contest_id, community_id, user_id)
);
CREATE TABLE analytics_contest_stats (
    contest_id   uuid NOT NULL REFERENCES contests (id) ON DELETE CASCADE,
    community_id uuid NOT NULL REFERENCES communities (id) ON DELETE CASCADE,
    participants integer NOT NULL DEFAULT 0,
    submissions  integer NOT NULL DEFAULT 0,
    accepted     integer NOT NULL DEFAULT 0,
    PRIMARY KEY (contest_id, community_id)
);
CREATE INDEX analytics_contest_stats_community ON analytics_contest_stats (community_id);

-- --- helpers -------------------------------------------------------------------------------------------------

CREATE FUNCTION analytics_day(at timestamptz) RETURNS date
    LANGUAGE sql IMMUTABLE AS $$ SELECT (at AT TIME ZONE 'UTC')::date $$;

CREATE FUNCTION analytics_week(at timestamptz) RETURNS date
    LANGUAGE sql IMMUTABLE AS $$ SELECT date_trunc('week', at AT TIME ZONE 'UTC')::date $$;

CREATE FUNCTION analytics_shard(user_id uuid) RETURNS smallint
    LANGUAGE sql IMMUTABLE AS $$ SELECT (get_byte(uuid_send(user_id), 15) % 8)::smallint $$;

-- The twentieth of a lecture its furthest watched point lies in (null: nothing watched, or no duration).
-- `watched` is lecture_progress.watched: sorted, disjoint intervals flattened, so its last element is the end.
CREATE FUNCTION analytics_reach_bucket(watched double precision[], duration_s double precision) RETURNS smallint
    LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN duration_s > 0 AND cardinality(watched) > 0
                THEN least(19, greatest(0, floor(watched[cardinality(watched)] / duration_s * 20)))::smallint END $$;

CREATE FUNCTION analytics_score_bucket(score double precision, max_points double precision) RETURNS smallint
    LANGUAGE sql IMMUTABLE AS $$ SELECT least(9, greatest(0, floor(score / max_points * 10)))::smallint $$;

-- --- enrollments ---------------------------------------------------------------------------------------------

CREATE FUNCTION analytics_on_enrollment() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    d_enrolled integer := 0;
    d_completed integer := 0;
    r record;
BEGIN
    IF TG_OP = 'INSERT' THEN
        d_enrolled := 1;
    ELSIF TG_OP = 'DELETE' THEN
        d_enrolled := -1;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        IF NEW.completed_at IS NOT NULL THEN
            d_completed := 1;
        END IF;
        r := NEW;
    ELSE
        r := OLD;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        IF OLD.completed_at IS NOT NULL THEN
            d_completed := d_completed - 1;
        END IF;
    END IF;
    IF d_enrolled <> 0 OR d_completed <> 0 THEN
        INSERT INTO analytics_course_totals (course_id, enrolled, completed) VALUES (r.course_id, d_enrolled, d_completed)
            ON CONFLICT (course_id) DO UPDATE SET enrolled = analytics_course_totals.enrolled + d_enrolled,
                completed = analytics_course_totals.completed + d_completed;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        IF TG_OP = 'DELETE' THEN
            UPDATE analytics_course_days SET enrollments = enrollments - 1
                WHERE course_id = OLD.course_id AND day = analytics_day(OLD.created_at);
            UPDATE analytics_platform_days SET enrollments = enrollments - 1 WHERE day = analytics_day(OLD.created_at);
        END IF;
        IF OLD.completed_at IS NOT NULL AND (TG_OP = 'DELETE' OR NEW.completed_at IS DISTINCT FROM OLD.completed_at) THEN
            UPDATE analytics_course_days SET completions = completions - 1
                WHERE course_id = OLD.course_id AND day = analytics_day(OLD.completed_at);
            UPDATE analytics_platform_days SET completions = completions - 1 WHERE day = analytics_day(OLD.completed_at);
        END IF;
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO analytics_course_days (course_id, day, enrollments) VALUES (NEW.course_id, analytics_day(NEW.created_at), 1)
            ON CONFLICT (course_id, day) DO UPDATE SET enrollments = analytics_course_days.enrollments + 1;
        INSERT INTO analytics_platform_days (day, enrollments) VALUES (analytics_day(NEW.created_at), 1)
            ON CONFLICT (day) DO UPDATE SET enrollments = analytics_platform_days.enrollments + 1;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.completed_at IS NOT NULL
       AND (TG_OP = 'INSERT' OR NEW.completed_at IS DISTINCT FROM OLD.completed_at) THEN
        INSERT INTO analytics_course_days (course_id, day, completions)
            VALUES (NEW.course_id, analytics_day(NEW.completed_at), 1)
            ON CONFLICT (course_id, day) DO UPDATE SET completions = analytics_course_days.completions + 1;
        INSERT INTO analytics_platform_days (day, completions) VALUES (analytics_day(NEW.completed_at), 1)
            ON CONFLICT (day) DO UPDATE SET completions = analytics_platform_days.completions + 1;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER analytics_enrollments AFTER INSERT OR DELETE OR UPDATE OF completed_at ON enrollments
    FOR EACH ROW EXECUTE FUNCTION analytics_on_enrollment();

-- --- progress ------------------------------------------------------------------------------------------------

-- Counts a learner active on the day (and week) of a progress write, once per day per course and per platform.
CREATE FUNCTION analytics_count_active(p_course uuid, p_user uuid, p_at timestamptz) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    d date := analytics_day(p_at);
    w date := analytics_week(p_at);
    prev_day date;
    prev_week date;
BEGIN
    -- The common case, a learner already counted today here and on the platform, reads two rows and writes none.
    IF EXISTS (SELECT 1 FROM analytics_course_learners WHERE course_id = p_course AND user_id = p_user AND last_day >= d)
       AND EXISTS (SELECT 1 FROM analytics_platform_learners WHERE user_id = p_user AND last_day >= d) THEN
        RETURN;
    END IF;
    SELECT last_day, last_week INTO prev_day, prev_week FROM analytics_course_learners
        WHERE course_id = p_course AND user_id = p_user FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO analytics_course_learners (course_id, user_id, last_day, last_week) VALUES (p_course, p_user, d, w)
            ON CONFLICT (course_id, user_id) DO NOTHING;
        IF NOT FOUND THEN  -- a concurrent first write of the same learner: count from its row
            PERFORM analytics_count_active(p_course, p_user, p_at);
            RETURN;
        END IF;
    ELSIF d > prev_day THEN
        UPDATE analytics_course_learners SET last_day = d, last_week = greatest(last_week, w)
            WHERE course_id = p_course AND user_id = p_user;
    ELSE
        prev_week := w;  -- an earlier (or the same) day: already counted
    END IF;
    IF prev_day IS NULL OR d > prev_day THEN
        INSERT INTO analytics_course_days (course_id, day, active_learners) VALUES (p_course, d, 1)
            ON CONFLICT (course_id, day) DO UPDATE SET active_learners = analytics_course_days.active_learners + 1;
        IF prev_week IS NULL OR w > prev_week THEN
            INSERT INTO analytics_course_weeks (course_id, week, active_learners) VALUES (p_course, w, 1)
                ON CONFLICT (course_id, week) DO UPDATE SET active_learners = analytics_course_weeks.active_learners + 1;
        END IF;
    END IF;

    prev_day := NULL;
    prev_week := NULL;
    SELECT last_day, last_week INTO prev_day, prev_week FROM analytics_platform_learners WHERE user_id = p_user FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO analytics_platform_learners (user_id, last_day, last_week) VALUES (p_user, d, w)
            ON CONFLICT (user_id) DO NOTHING;
        IF NOT FOUND THEN
            SELECT last_day, last_week INTO prev_day, prev_week FROM analytics_platform_learners
                WHERE user_id = p_user FOR UPDATE;
            IF d <= prev_day THEN
                RETURN;
            END IF;
            UPDATE analytics_platform_learners SET last_day = d, last_week = greatest(last_week, w) WHERE user_id = p_user;
        END IF;
    ELSIF d > prev_day THEN
        UPDATE analytics_platform_learners SET last_day = d, last_week = greatest(last_week, w) WHERE user_id = p_user;
    ELSE
        RETURN;
    END IF;
    INSERT INTO analytics_platform_days (day, active_learners) VALUES (d, 1)
        ON CONFLICT (day) DO UPDATE SET active_learners = analytics_platform_days.active_learners + 1;
    IF prev_week IS NULL OR w > prev_week THEN
        INSERT INTO analytics_platform_weeks (week, active_learners) VALUES (w, 1)
            ON CONFLICT (week) DO UPDATE SET active_learners = analytics_platform_weeks.active_learners + 1;
    END IF;
END $$;

CREATE FUNCTION analytics_on_progress() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    duration double precision;
    old_bucket smallint;
    new_bucket smallint;
    d_viewers integer := 0;
    d_completions integer := 0;
    d_watched double precision := 0;
    r record;
BEGIN
    IF TG_OP = 'DELETE' THEN
        r := OLD;
    ELSE
        r := NEW;
    END IF;
    IF TG_OP <> 'UPDATE' OR NEW.watched IS DISTINCT FROM OLD.watched THEN  -- the duration is needed for the reach
        SELECT duration_s INTO duration FROM lectures WHERE id = r.lecture_id;
        IF NOT FOUND THEN
            RETURN NULL;  -- the lecture is being deleted: its rollups go with it
        END IF;
    END IF;
    IF TG_OP = 'INSERT' THEN
        d_viewers := 1;
        d_completions := NEW.completed::integer;
        d_watched := NEW.watched_s;
        new_bucket := analytics_reach_bucket(NEW.watched, duration);
    ELSIF TG_OP = 'DELETE' THEN
        d_viewers := -1;
        d_completions := -(OLD.completed::integer);
        d_watched := -OLD.watched_s;
        old_bucket := analytics_reach_bucket(OLD.watched, duration);
    ELSE
        d_completions := NEW.completed::integer - OLD.completed::integer;
        d_watched := NEW.watched_s - OLD.watched_s;
        IF NEW.watched IS DISTINCT FROM OLD.watched THEN
            old_bucket := analytics_reach_bucket(OLD.watched, duration);
            new_bucket := analytics_reach_bucket(NEW.watched, duration);
        END IF;
    END IF;
    IF d_viewers <> 0 OR d_completions <> 0 OR d_watched <> 0 THEN
        INSERT INTO analytics_lecture_stats (lecture_id, shard, course_id, viewers, completions, watched_s)
            VALUES (r.lecture_id, analytics_shard(r.user_id), r.course_id, d_viewers, d_completions, d_watched)
            ON CONFLICT (lecture_id, shard) DO UPDATE
                SET viewers = analytics_lecture_stats.viewers + d_viewers,
                    completions = analytics_lecture_stats.completions + d_completions,
                    watched_s = analytics_lecture_stats.watched_s + d_watched;
    END IF;
    IF old_bucket IS DISTINCT FROM new_bucket THEN
        IF old_bucket IS NULL THEN
            INSERT INTO analytics_lecture_reach (lecture_id, course_id) VALUES (r.lecture_id, r.course_id)
                ON CONFLICT (lecture_id) DO NOTHING;
            UPDATE analytics_lecture_reach SET learners[new_bucket + 1] = learners[new_bucket + 1] + 1
                WHERE lecture_id = r.lecture_id;
        ELSIF new_bucket IS NULL THEN
            UPDATE analytics_lecture_reach SET learners[old_bucket + 1] = learners[old_bucket + 1] - 1
                WHERE lecture_id = r.lecture_id;
        ELSE
            UPDATE analytics_lecture_reach SET learners[old_bucket + 1] = learners[old_bucket + 1] - 1,
                                               learners[new_bucket + 1] = learners[new_bucket + 1] + 1
                WHERE lecture_id = r.lecture_id;
        END IF;
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.updated_at > OLD.updated_at) THEN
        PERFORM analytics_count_active(NEW.course_id, NEW.user_id, NEW.updated_at);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER analytics_progress AFTER INSERT OR UPDATE OR DELETE ON lecture_progress
    FOR EACH ROW EXECUTE FUNCTION analytics_on_progress();

-- --- scores --------------------------------------------------------------------------------------------------

CREATE FUNCTION analytics_on_score() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE analytics_score_buckets SET learners = learners - 1, score_sum = score_sum - OLD.score
            WHERE item_id = OLD.item_id AND bucket = analytics_score_bucket(OLD.score, OLD.max_points);
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        INSERT INTO analytics_score_buckets (item_id, bucket, course_id, learners, score_sum)
            VALUES (NEW.item_id, analytics_score_bucket(NEW.score, NEW.max_points), NEW.course_id, 1, NEW.score)
            ON CONFLICT (item_id, bucket) DO UPDATE SET learners = analytics_score_buckets.learners + 1,
                score_sum = analytics_score_buckets.score_sum + NEW.score;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER analytics_scores AFTER INSERT OR UPDATE OR DELETE ON analytics_scores
    FOR EACH ROW EXECUTE FUNCTION analytics_on_score();

CREATE FUNCTION analytics_on_quiz_attempt() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    q record;
BEGIN
    IF NEW.submitted_at IS NULL OR NEW.score IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT course_id, max_points INTO q FROM quizzes WHERE id = NEW.quiz_id;
    INSERT INTO analytics_scores (item_id, user_id, course_id, kind, max_points, score)
        VALUES (NEW.quiz_id, NEW.user_id, q.course_id, 'quiz', q.max_points, NEW.score)
        ON CONFLICT (item_id, user_id) DO UPDATE SET score = EXCLUDED.score
            WHERE analytics_scores.score < EXCLUDED.score;
    RETURN NULL;
END $$;

CREATE TRIGGER analytics_quiz_attempts AFTER INSERT OR UPDATE OF score, submitted_at ON quiz_attempts
    FOR EACH ROW EXECUTE FUNCTION analytics_on_quiz_attempt();

CREATE FUNCTION analytics_on_submission() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    a record;
BEGIN
    IF NEW.grade IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT course_id, max_points INTO a FROM assignments WHERE id = NEW.assignment_id;
    INSERT INTO analytics_scores (item_id, user_id, course_id, kind, max_points, score, counted_at, counted_id)
        VALUES (NEW.assignment_id, NEW.user_id, a.course_id, 'assignment', a.max_points, NEW.grade, NEW.submitted_at,
                NEW.id)
        ON CONFLICT (item_id, user_id) DO UPDATE
            SET score = EXCLUDED.score, counted_at = EXCLUDED.counted_at, counted_id = EXCLUDED.counted_id
            WHERE (analytics_scores.counted_at, analytics_scores.counted_id) <= (EXCLUDED.counted_at, EXCLUDED.counted_id)
              AND analytics_scores.score IS DISTINCT FROM EXCLUDED.score;
    RETURN NULL;
END $$;

CREATE TRIGGER analytics_submissions AFTER INSERT OR UPDATE OF grade ON submissions
    FOR EACH ROW EXECUTE FUNCTION analytics_on_submission();

-- --- contests ------------------------------------------------------------------------------------------------

CREATE FUNCTION analytics_on_contest_submission() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    d_participants integer := 0;
    d_submissions integer := 0;
    d_accepted integer := 0;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO analytics_contest_participants (contest_id, community_id, user_id)
            VALUES (NEW.contest_id, NEW.community_id, NEW.user_id) ON CONFLICT DO NOTHING;
        IF FOUND THEN
            d_participants := 1;
        END IF;
        d_submissions := 1;
        d_accepted := (NEW.verdict IS NOT DISTINCT FROM 'accepted')::integer;
    ELSE
        d_accepted := (NEW.verdict IS NOT DISTINCT FROM 'accepted')::integer
                    - (OLD.verdict IS NOT DISTINCT FROM 'accepted')::integer;
        IF d_accepted = 0 THEN
            RETURN NULL;
        END IF;
    END IF;
    INSERT INTO analytics_contest_stats (contest_id, community_id, participants, submissions, accepted)
        VALUES (NEW.contest_id, NEW.community_id, d_participants, d_submissions, d_accepted)
        ON CONFLICT (contest_id, community_id) DO UPDATE
            SET participants = analytics_contest_stats.participants + d_participants,
                submissions = analytics_contest_stats.submissions + d_submissions,
                accepted = analytics_contest_stats.accepted + d_accepted;
    RETURN NULL;
END $$;

CREATE TRIGGER analytics_contest_submissions AFTER INSERT OR UPDATE OF verdict ON contest_submissions
    FOR EACH ROW EXECUTE FUNCTION analytics_on_contest_submission();

-- --- backfill ------------------------------------------------------------------------------------------------

-- Rebuilds every rollup from the raw rows (the backfill below; also a repair tool: `SELECT analytics_rebuild()`
-- under the same locks). Activity history is what lecture_progress keeps: each learner's latest report per lecture.
CREATE FUNCTION analytics_rebuild() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE analytics_course_days, analytics_course_totals, analytics_course_weeks, analytics_course_learners, analytics_platform_days,
        analytics_platform_weeks, analytics_platform_learners, analytics_lecture_stats, analytics_lecture_reach,
        analytics_scores, analytics_score_buckets, analytics_contest_participants, analytics_contest_stats;

    INSERT INTO analytics_course_days (course_id, day, enrollments, completions, active_learners)
    SELECT course_id, day, sum(enrollments), sum(completions), sum(active_learners) FROM (
        SELECT course_id, analytics_day(created_at) AS day, count(*) AS enrollments, 0 AS completions, 0 AS active_learners
            FROM enrollments GROUP BY 1, 2
        UNION ALL
        SELECT course_id, analytics_day(completed_at), 0, count(*), 0 FROM enrollments WHERE completed_at IS NOT NULL
            GROUP BY 1, 2
        UNION ALL
        SELECT course_id, analytics_day(updated_at), 0, 0, count(DISTINCT user_id) FROM lecture_progress GROUP BY 1, 2
    ) parts GROUP BY course_id, day;

    INSERT INTO analytics_course_weeks (course_id, week, active_learners)
    SELECT course_id, analytics_week(updated_at), count(DISTINCT user_id) FROM lecture_progress GROUP BY 1, 2;

    INSERT INTO analytics_course_learners (course_id, user_id, last_day, last_week)
    SELECT course_id, user_id, analytics_day(max(updated_at)), analytics_week(max(updated_at))
        FROM lecture_progress GROUP BY course_id, user_id;

    INSERT INTO analytics_platform_days (day, enrollments, completions, active_learners)
    SELECT day, sum(enrollments), sum(completions), sum(active_learners) FROM (
        SELECT analytics_day(created_at) AS day, count(*) AS enrollments, 0 AS completions, 0 AS active_learners
            FROM enrollments GROUP BY 1
        UNION ALL
        SELECT analytics_day(completed_at), 0, count(*), 0 FROM enrollments WHERE completed_at IS NOT NULL GROUP BY 1
        UNION ALL
        SELECT analytics_day(updated_at), 0, 0, count(DISTINCT user_id) FROM lecture_progress GROUP BY 1
    ) parts GROUP BY day;

    INSERT INTO analytics_platform_weeks (week, active_learners)
    SELECT analytics_week(updated_at), count(DISTINCT user_id) FROM lecture_progress GROUP BY 1;

    INSERT INTO analytics_platform_learners (user_id, last_day, last_week)
    SELECT user_id, analytics_day(max(updated_at)), analytics_week(max(updated_at)) FROM lecture_progress GROUP BY user_id;

    INSERT INTO analytics_lecture_stats (lecture_id, shard, course_id, viewers, completions, watched_s)
    SELECT lecture_id, analytics_shard(user_id), min(course_id::text)::uuid, count(*), count(*) FILTER (WHERE completed),
           coalesce(sum(watched_s), 0)
        FROM lecture_progress GROUP BY 1, 2;

    INSERT INTO analytics_lecture_reach (lecture_id, course_id, learners)
    SELECT lecture_id, course_id, (SELECT array_agg(coalesce((counts ->> g::text)::int, 0) ORDER BY g)
                                   FROM generate_series(0, 19) g)
    FROM (SELECT lecture_id, course_id, jsonb_object_agg(bucket, n) AS counts
          FROM (SELECT p.lecture_id, l.course_id, analytics_reach_bucket(p.watched, l.duration_s) AS bucket, count(*) AS n
                FROM lecture_progress p JOIN lectures l ON l.id = p.lecture_id
                WHERE analytics_reach_bucket(p.watched, l.duration_s) IS NOT NULL
                GROUP BY 1, 2, 3) buckets
          GROUP BY 1, 2) per_lecture;

    INSERT INTO analytics_course_totals (course_id, enrolled, completed)
    SELECT course_id, count(*), count(*) FILTER (WHERE completed_at IS NOT NULL) FROM enrollments GROUP BY 1;

    -- The scores' own trigger fills the buckets as these rows go in.
    INSERT INTO analytics_scores (item_id, user_id, course_id, kind, max_points, score)
    SELECT a.quiz_id, a.user_id, q.course_id, 'quiz', q.max_points, max(a.score)
        FROM quiz_attempts a JOIN quizzes q ON q.id = a.quiz_id
        WHERE a.submitted_at IS NOT NULL AND a.score IS NOT NULL
        GROUP BY a.quiz_id, a.user_id, q.course_id, q.max_points;

    INSERT INTO analytics_scores (item_id, user_id, course_id, kind, max_points, score, counted_at, counted_id)
    SELECT DISTINCT ON (s.assignment_id, s.user_id) s.assignment_id, s.user_id, a.course_id, 'assignment', a.max_points,
           s.grade, s.submitted_at, s.id
        FROM submissions s JOIN assignments a ON a.id = s.assignment_id
        WHERE s.grade IS NOT NULL
        ORDER BY s.assignment_id, s.user_id, s.submitted_at DESC, s.id DESC;

    INSERT INTO analytics_contest_participants (contest_id, community_id, user_id)
    SELECT DISTINCT contest_id, community_id, user_id FROM contest_submissions;

    INSERT INTO analytics_contest_stats (contest_id, community_id, participants, submissions, accepted)
    SELECT contest_id, community_id, count(DISTINCT user_id), count(*), count(*) FILTER (WHERE verdict = 'accepted')
        FROM contest_submissions GROUP BY 1, 2;
END $$;

SELECT analytics_rebuild();
