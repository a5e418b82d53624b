-- Issue 12 (items 2, 5, 6, 14): contests and coins that a student cannot abuse.
--
-- * Prizes are paid from prize budgets that platform admins set (per community, per contest or per
--   template), only for contests whose prizes an admin approved; every credit names its source.
-- * A community takes part in a contest (or a template's wars) only once one of its admins accepted.
-- * Stored contest and assignment times stay within the range clients may send (core_api/timestamps.py).
-- * Contest submissions carry the real time they were received, for the per-user limits.

-- --- times within range -------------------------------------------------------------------------------
-- Rows stored before the edge checked them (`infinity` breaks every comparison in Python) are brought
-- into range, keeping each contest's window valid.
WITH fixed AS (
    SELECT id,
           least(greatest(starts_at, '1970-01-01T00:00:00Z'), '9998-12-31T00:00:00Z') AS s,
           ends_at AS e, freeze_at AS f
    FROM contests
    WHERE starts_at < '1970-01-01T00:00:00Z' OR starts_at > '9998-12-31T00:00:00Z'
       OR ends_at < '1970-01-01T00:00:00Z' OR ends_at > '9999-01-01T00:00:00Z'
       OR freeze_at < '1970-01-01T00:00:00Z' OR freeze_at > '9999-01-01T00:00:00Z'
), window_fixed AS (
    SELECT id, s, least(greatest(e, s + interval '1 minute'), '9999-01-01T00:00:00Z') AS e, f FROM fixed
)
UPDATE contests c SET starts_at = w.s, ends_at = w.e,
       freeze_at = CASE WHEN w.f IS NULL THEN NULL ELSE least(greatest(w.f, w.s), w.e) END
FROM window_fixed w WHERE c.id = w.id;
ALTER TABLE contests ADD CONSTRAINT contests_times_in_range
    CHECK (starts_at >= '1970-01-01T00:00:00Z' AND ends_at <= '9999-01-01T00:00:00Z');

UPDATE assignments SET due_at = least(greatest(due_at, '1970-01-01T00:00:00Z'), '9999-01-01T00:00:00Z')
WHERE due_at < '1970-01-01T00:00:00Z' OR due_at > '9999-01-01T00:00:00Z';
ALTER TABLE assignments ADD CONSTRAINT assignments_due_in_range
    CHECK (due_at >= '1970-01-01T00:00:00Z' AND due_at <= '9999-01-01T00:00:00Z');

-- --- prize approval ------------------------------------------------------------------------------------
-- `not_needed` (no prize above 0 coins), `pending`, `approved` or `rejected`, with who decided and why.
ALTER TABLE contests
    ADD COLUMN approval text NOT NULL DEFAULT 'not_needed'
        CHECK (approval IN ('not_needed', 'pending', 'approved', 'rejected')),
    ADD COLUMN approval_note text,
    ADD COLUMN approved_by uuid REFERENCES users (id) ON DELETE SET NULL,
    ADD COLUMN approval_decided_at timestamptz,
    ADD COLUMN award_note text;  -- why the prizes have not been (or were not) paid
ALTER TABLE contest_templates
    ADD COLUMN approval text NOT NULL DEFAULT 'not_needed'
        CHECK (approval IN ('not_needed', 'pending', 'approved', 'rejected')),
    ADD COLUMN approval_note text,
    ADD COLUMN approved_by uuid REFERENCES users (id) ON DELETE SET NULL,
    ADD COLUMN approval_decided_at timestamptz;
-- Prizes that nobody approved and that are not paid yet wait for an admin, like new ones.
UPDATE contests SET approval = 'pending'
WHERE awarded_at IS NULL AND jsonb_path_exists(prizes, '$[*] ? (@ > 0)');
UPDATE contest_templates SET approval = 'pending' WHERE jsonb_path_exists(prizes, '$[*] ? (@ > 0)');
CREATE INDEX contests_waiting_for_approval ON contests (created_at) WHERE approval = 'pending';

-- --- prize budgets ---------------------------------------------------------------------------------------
-- One budget per community, contest or template; its balance never goes below zero, and every change
-- is an append-only entry naming the admin who set it or the contest that was paid from it.
CREATE TABLE prize_budgets (
    id            uuid PRIMARY KEY,
    community_id  uuid UNIQUE REFERENCES communities (id) ON DELETE CASCADE,
    contest_id    uuid UNIQUE REFERENCES contests (id) ON DELETE CASCADE,
    template_id   uuid UNIQUE REFERENCES contest_templates (id) ON DELETE CASCADE,
    balance       bigint NOT NULL DEFAULT 0 CHECK (balance >= 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (num_nonnulls(community_id, contest_id, template_id) = 1)
);
CREATE TABLE prize_budget_entries (
    id             uuid PRIMARY KEY,
    budget_id      uuid NOT NULL REFERENCES prize_budgets (id) ON DELETE CASCADE,
    kind           text NOT NULL CHECK (kind IN ('set', 'award')),
    amount         bigint NOT NULL,
    balance_after  bigint NOT NULL CHECK (balance_after >= 0),
    actor_id       uuid REFERENCES users (id) ON DELETE SET NULL,  -- the admin, for `set`
    contest_id     uuid,                                            -- the contest paid, for `award`
    note           text NOT NULL DEFAULT '',
    ref            text UNIQUE,                                     -- `award:<contest>`: paid once
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX prize_budget_entries_page ON prize_budget_entries (budget_id, created_at DESC, id);
CREATE FUNCTION prize_budget_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'prize_budget_entries is append-only';
END $$;
-- (Deleting a budget, with the community, contest or template it belongs to, deletes its entries.)
CREATE TRIGGER prize_budget_entries_append_only BEFORE UPDATE ON prize_budget_entries
    FOR EACH ROW EXECUTE FUNCTION prize_budget_entries_append_only();

-- Every coin credited states where it came from: a prize names its contest, the budget it was paid
-- from and the admin who approved the prizes. Entries written before this migration stay as they are.
ALTER TABLE wallet_entries
    ADD COLUMN source text,
    ADD COLUMN contest_id uuid,
    ADD COLUMN budget_id uuid,
    ADD COLUMN approved_by uuid;
ALTER TABLE wallet_entries ADD CONSTRAINT wallet_credits_name_their_source
    CHECK (amount < 0 OR source IS NOT NULL) NOT VALID;
ALTER TABLE wallet_entries ADD CONSTRAINT wallet_prizes_name_contest_budget_and_approver
    CHECK (source IS DISTINCT FROM 'prize'
           OR (contest_id IS NOT NULL AND budget_id IS NOT NULL AND approved_by IS NOT NULL));

-- --- community consent ---------------------------------------------------------------------------------
-- A community is `invited` until one of its admins accepts (`accepted`: it takes part) or declines.
ALTER TABLE contest_communities
    ADD COLUMN state text NOT NULL DEFAULT 'accepted' CHECK (state IN ('invited', 'accepted', 'declined')),
    ADD COLUMN invited_by uuid REFERENCES users (id) ON DELETE SET NULL,
    ADD COLUMN answered_by uuid REFERENCES users (id) ON DELETE SET NULL,
    ADD COLUMN answered_at timestamptz,
    ADD COLUMN invited_at timestamptz NOT NULL DEFAULT now();
-- Communities enlisted by someone who was neither their admin nor a platform admin were never asked.
UPDATE contest_communities cc SET state = 'invited', invited_by = c.created_by
FROM contests c
WHERE c.id = cc.contest_id
  AND NOT EXISTS (SELECT 1 FROM users u WHERE u.id = c.created_by AND u.role = 'admin')
  AND NOT EXISTS (SELECT 1 FROM community_members m WHERE m.community_id = cc.community_id
                  AND m.user_id = c.created_by AND m.role IN ('admin', 'owner'));
CREATE INDEX contest_communities_by_community ON contest_communities (community_id, state);

CREATE TABLE contest_template_communities (
    template_id   uuid NOT NULL REFERENCES contest_templates (id) ON DELETE CASCADE,
    community_id  uuid NOT NULL REFERENCES communities (id) ON DELETE CASCADE,
    state         text NOT NULL CHECK (state IN ('invited', 'accepted', 'declined')),
    invited_by    uuid REFERENCES users (id) ON DELETE SET NULL,
    answered_by   uuid REFERENCES users (id) ON DELETE SET NULL,
    answered_at   timestamptz,
    invited_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (template_id, community_id)
);
CREATE INDEX contest_template_communities_by_community ON contest_template_communities (community_id, state);
INSERT INTO contest_template_communities (template_id, community_id, state, invited_by)
SELECT t.id, c.id,
       CASE WHEN EXISTS (SELECT 1 FROM users u WHERE u.id = t.created_by AND u.role = 'admin')
              OR EXISTS (SELECT 1 FROM community_members m WHERE m.community_id = c.id
                         AND m.user_id = t.created_by AND m.role IN ('admin', 'owner'))
            THEN 'accepted' ELSE 'invited' END,
       t.created_by
FROM contest_templates t JOIN communities c ON c.id = ANY (t.communities)
ON CONFLICT DO NOTHING;
ALTER TABLE contest_templates DROP COLUMN communities;

-- --- submissions: per-user limits ----------------------------------------------------------------------
-- `submitted_at` is the contest's clock (what scoring counts); `received_at` is the server's, for the
-- per-user rate limit and the count of submissions waiting for the judge.
ALTER TABLE contest_submissions ADD COLUMN received_at timestamptz NOT NULL DEFAULT clock_timestamp();
CREATE INDEX contest_submissions_received ON contest_submissions (user_id, received_at);
