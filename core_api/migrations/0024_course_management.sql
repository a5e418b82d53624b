-- Course management (issue 17): unpublish, archive and soft delete; categories and tags; prerequisites;
-- instructors' view of learners' progress and learners' "continue where you left off".
--
-- Lifecycle: draft -> published <-> unpublished; any of them -> archived -> (restore) the status it had.
-- `archived_from` keeps that status. Soft delete sets `deleted_at`: the row stays (enrollments, audit
-- entries and certificates point at it) but only admins see it.
ALTER TABLE courses DROP CONSTRAINT courses_status_check;
ALTER TABLE courses ADD CONSTRAINT courses_status_check
    CHECK (status IN ('draft', 'published', 'unpublished', 'archived'));
ALTER TABLE courses
    ADD COLUMN archived_from text CHECK (archived_from IN ('draft', 'published', 'unpublished')),
    ADD COLUMN archived_at   timestamptz,
    ADD COLUMN deleted_at    timestamptz,
    ADD COLUMN deleted_by    uuid REFERENCES users (id) ON DELETE SET NULL,
    ADD COLUMN category      text CHECK (category <> '' AND length(category) <= 200),
    ADD CONSTRAINT courses_archived_from CHECK ((status = 'archived') = (archived_from IS NOT NULL));

-- The catalogue pages through live courses in (created_at, id) order, optionally of one category.
CREATE INDEX courses_live_page ON courses (created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX courses_category_page ON courses (category, created_at, id) WHERE deleted_at IS NULL;

-- Normalised tags (trimmed, lower-case, length-limited by the API). The catalogue's tag filter looks
-- courses up by tag; a course's own tags come from the primary key.
CREATE TABLE course_tags (
    course_id uuid NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    tag       text NOT NULL CHECK (tag <> '' AND length(tag) <= 200),
    PRIMARY KEY (course_id, tag)
);
CREATE INDEX course_tags_tag ON course_tags (tag, course_id);

-- `course_id` requires `requires_id` to be completed (a certificate) before a new enrollment.
CREATE TABLE course_prerequisites (
    course_id   uuid NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    requires_id uuid NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    PRIMARY KEY (course_id, requires_id),
    CHECK (course_id <> requires_id)
);
CREATE INDEX course_prerequisites_required ON course_prerequisites (requires_id);

-- A learner's last activity in a course and their course list by it ("continue where you left off";
-- the instructor's learners table).
CREATE INDEX lecture_progress_activity ON lecture_progress (user_id, course_id, updated_at DESC);
