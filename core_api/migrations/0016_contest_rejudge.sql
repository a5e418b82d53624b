-- Contest problems can be edited and their submissions judged again (issue 13).
-- `judge_rev` counts how often a submission was sent back to the judge: a verdict is stored only by the
-- judging of the latest revision, so a verdict computed with a problem's old tests, arriving after an edit,
-- never overwrites the new one. `queued_at` is when it was last sent back (server clock): a rejudged
-- submission is taken for abandoned only that long after it was queued, not after it was made.
ALTER TABLE contest_submissions ADD COLUMN judge_rev integer NOT NULL DEFAULT 0;
ALTER TABLE contest_submissions ADD COLUMN queued_at timestamptz;

-- Every rejudge (asked for, or caused by an edit of tests or limits): the per-contest rate limit counts them.
CREATE TABLE contest_rejudges (
    id          uuid PRIMARY KEY,
    contest_id  uuid NOT NULL REFERENCES contests (id) ON DELETE CASCADE,
    problem_id  uuid NOT NULL REFERENCES contest_problems (id) ON DELETE CASCADE,
    actor_id    uuid REFERENCES users (id) ON DELETE SET NULL,
    cause       text NOT NULL CHECK (cause IN ('rejudge', 'edit')),
    submissions integer NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX contest_rejudges_recent ON contest_rejudges (contest_id, created_at);
