-- Group wars: contests between communities, their problems, submissions with verdicts, and the
-- per-community results written once when a contest is finalised (the all-time ranking sums them).

CREATE TABLE contests (
    id               uuid PRIMARY KEY,
    title            text NOT NULL,
    description      text NOT NULL DEFAULT '',
    organizer_id     uuid REFERENCES communities (id) ON DELETE SET NULL,
    created_by       uuid NOT NULL REFERENCES users (id),
    starts_at        timestamptz NOT NULL,
    ends_at          timestamptz NOT NULL,
    freeze_at        timestamptz,
    scoring          text NOT NULL DEFAULT 'icpc' CHECK (scoring IN ('icpc', 'points')),
    penalty_minutes  integer NOT NULL DEFAULT 20 CHECK (penalty_minutes >= 0),
    finalised_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at),
    CHECK (freeze_at IS NULL OR (freeze_at >= starts_at AND freeze_at <= ends_at))
);
CREATE INDEX contests_page ON contests (created_at, id);

CREATE TABLE contest_communities (
    contest_id   uuid NOT NULL REFERENCES contests (id) ON DELETE CASCADE,
    community_id uuid NOT NULL REFERENCES communities (id) ON DELETE CASCADE,
    PRIMARY KEY (contest_id, community_id)
);

CREATE TABLE contest_problems (
    id          uuid PRIMARY KEY,
    contest_id  uuid NOT NULL REFERENCES contests (id) ON DELETE CASCADE,
    ordinal     integer NOT NULL,
    label       text NOT NULL,
    title       text NOT NULL,
    statement   text NOT NULL DEFAULT '',
    samples     jsonb NOT NULL DEFAULT '[]'::jsonb,
    tests       jsonb NOT NULL,
    cpu_ms      integer NOT NULL,
    memory_kb   integer NOT NULL,
    points      integer NOT NULL DEFAULT 1,
    UNIQUE (contest_id, ordinal)
);

CREATE TABLE contest_submissions (
    id            uuid PRIMARY KEY,
    contest_id    uuid NOT NULL REFERENCES contests (id) ON DELETE CASCADE,
    problem_id    uuid NOT NULL REFERENCES contest_problems (id) ON DELETE CASCADE,
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    community_id  uuid NOT NULL REFERENCES communities (id) ON DELETE CASCADE,
    language      text NOT NULL,
    source        text NOT NULL,
    submitted_at  timestamptz NOT NULL,
    verdict       text,
    passed        integer,
    total         integer,
    judged_at     timestamptz,
    disqualified  boolean NOT NULL DEFAULT false,
    CHECK ((verdict IS NULL) = (judged_at IS NULL))
);
CREATE INDEX contest_submissions_board ON contest_submissions (contest_id, submitted_at, id);
CREATE INDEX contest_submissions_by_user ON contest_submissions (contest_id, user_id, submitted_at DESC);

CREATE TABLE contest_results (
    contest_id   uuid NOT NULL REFERENCES contests (id) ON DELETE CASCADE,
    community_id uuid NOT NULL REFERENCES communities (id) ON DELETE CASCADE,
    score        bigint NOT NULL,
    penalty      bigint NOT NULL,
    rank         integer NOT NULL,
    PRIMARY KEY (contest_id, community_id)
);
