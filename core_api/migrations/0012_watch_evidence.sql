-- Completion from evidence (issue 12, item 13): a lecture is completed by what the server saw a learner
-- watch, not by a client's `completed: true`.
--
-- `watched` holds the stretches of the lecture the learner was seen playing, merged into sorted, disjoint
-- intervals and flattened: [start0, end0, start1, end1, ...] in seconds; `watched_s` is their total. One
-- array per learner and lecture, however many reports made it. Completions recorded before this migration
-- (and the certificates they issued) stand.
ALTER TABLE lecture_progress
    ADD COLUMN watched double precision[] NOT NULL DEFAULT '{}',
    ADD COLUMN watched_s double precision NOT NULL DEFAULT 0 CHECK (watched_s >= 0);

-- Each learner's watch clock (seconds since the Unix epoch): the wall time up to which the media time they
-- have been credited is accounted for, at most STUDYHALL_PROGRESS_MAX_RATE seconds of media per second.
-- It keeps one learner from being credited several lectures at once.
CREATE TABLE watch_clocks (
    user_id         uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    credited_until  double precision NOT NULL DEFAULT 0
);
