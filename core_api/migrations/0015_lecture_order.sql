-- Lectures' positions are a permutation 0..n-1 per course after every change (issue 13). Earlier versions
-- stored whatever position a client asked for, so courses may hold repeats and gaps: renumber them in their
-- shown order (position, then creation), then let the database refuse any repeat. The constraint is checked
-- at commit, because moving a lecture shifts its neighbours one row at a time.
UPDATE lectures l SET position = o.rank
FROM (
    SELECT id, row_number() OVER (PARTITION BY course_id ORDER BY position, created_at, id) - 1 AS rank
    FROM lectures
) o
WHERE o.id = l.id AND l.position IS DISTINCT FROM o.rank;

ALTER TABLE lectures ADD CONSTRAINT lectures_one_per_position
    UNIQUE (course_id, position) DEFERRABLE INITIALLY DEFERRED;
DROP INDEX IF EXISTS lectures_course;
