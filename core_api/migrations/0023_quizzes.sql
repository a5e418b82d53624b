-- Quizzes and their attempts (issue 17, core_api/grading/).
-- A quiz's questions live in one jsonb array, each with its answer key under "key": they are written
-- once, with the quiz, and never change afterwards (an attempt's shuffled order and its grading refer
-- to them by id). Learners only ever receive the questions rebuilt without "key" (grading/core.py).
CREATE TABLE quizzes (
    id                uuid PRIMARY KEY,
    course_id         uuid NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    title             text NOT NULL,
    description       text NOT NULL DEFAULT '',
    time_limit_s      integer CHECK (time_limit_s > 0),
    attempts_allowed  integer NOT NULL CHECK (attempts_allowed > 0),
    opens_at          timestamptz,
    closes_at         timestamptz,
    shuffle_questions boolean NOT NULL DEFAULT false,
    shuffle_options   boolean NOT NULL DEFAULT false,
    results_visible   boolean NOT NULL DEFAULT true,
    questions         jsonb NOT NULL,
    max_points        double precision NOT NULL CHECK (max_points > 0),
    created_by        uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    CHECK (closes_at IS NULL OR opens_at IS NULL OR closes_at > opens_at)
);
CREATE INDEX quizzes_course ON quizzes (course_id, created_at, id);

-- One learner's go at a quiz. `seed` fixes its shuffled order (the same on every reload); `deadline_at`
-- is the earlier of the time limit and the quiz's closing time, fixed when it starts. `answers` are the
-- saved ones (question id -> answer); `results` the graded ones, written once with `score` on submit.
-- `save_window_at`/`save_count` hold the per-attempt save rate limit (one counter for every node).
CREATE TABLE quiz_attempts (
    id             uuid PRIMARY KEY,
    quiz_id        uuid NOT NULL REFERENCES quizzes (id) ON DELETE CASCADE,
    user_id        uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    number         integer NOT NULL CHECK (number > 0),
    seed           bigint NOT NULL,
    started_at     timestamptz NOT NULL DEFAULT now(),
    deadline_at    timestamptz,
    answers        jsonb NOT NULL DEFAULT '{}',
    saved_at       timestamptz,
    submitted_at   timestamptz,
    finished_by    text CHECK (finished_by IN ('learner', 'deadline')),
    score          double precision,
    results        jsonb,
    save_window_at timestamptz,
    save_count     integer NOT NULL DEFAULT 0,
    UNIQUE (quiz_id, user_id, number)
);
CREATE INDEX quiz_attempts_page ON quiz_attempts (quiz_id, started_at, id);
CREATE INDEX quiz_attempts_user ON quiz_attempts (user_id, quiz_id);
