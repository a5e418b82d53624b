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

-- The weekly cycle: templates that open the next war by themselves (one contest per template and start).
CREATE TABLE contest_templates (
    id               uuid PRIMARY KEY,
    title            text NOT NULL,
    organizer_id     uuid REFERENCES communities (id) ON DELETE SET NULL,
    created_by       uuid NOT NULL REFERENCES users (id),
    communities      uuid[] NOT NULL,
    problems         jsonb NOT NULL,
    scoring          text NOT NULL CHECK (scoring IN ('icpc', 'points')),
    penalty_minutes  integer NOT NULL,
    weekday          integer NOT NULL CHECK (weekday BETWEEN 0 AND 6),
    start_minute     integer NOT NULL CHECK (start_minute BETWEEN 0 AND 1439),
    duration_minutes integer NOT NULL CHECK (duration_minutes > 0),
    freeze_minutes   integer NOT NULL CHECK (freeze_minutes >= 0),
    prizes           jsonb NOT NULL DEFAULT '[]'::jsonb,
    active           boolean NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE contests ADD COLUMN template_id uuid REFERENCES contest_templates (id) ON DELETE SET NULL;
ALTER TABLE contests ADD COLUMN prizes jsonb NOT NULL DEFAULT '[]'::jsonb;
ALTER TABLE contests ADD COLUMN awarded_at timestamptz;
CREATE UNIQUE INDEX contests_one_per_template_start ON contests (template_id, starts_at) WHERE template_id IS NOT NULL;

-- Coins: an append-only ledger. A user's balance is the sum of their entries; `ref` makes each award or
-- purchase happen at most once; rows can be neither changed nor deleted.
CREATE TABLE wallet_entries (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    amount      bigint NOT NULL CHECK (amount <> 0),
    reason      text NOT NULL,
    ref         text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX wallet_entries_user ON wallet_entries (user_id, created_at DESC, id);
CREATE FUNCTION wallet_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'wallet_entries is append-only';
END $$;
CREATE TRIGGER wallet_entries_append_only BEFORE UPDATE OR DELETE ON wallet_entries
    FOR EACH ROW EXECUTE FUNCTION wallet_entries_append_only();

-- Courses that cost coins: free enrollment is refused, `POST /courses/{id}/buy` spends the coins.
CREATE TABLE course_prices (
    course_id   uuid PRIMARY KEY REFERENCES courses (id) ON DELETE CASCADE,
    coins       bigint NOT NULL CHECK (coins > 0)
);
