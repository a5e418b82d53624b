-- Incremental standings (leaderboards/standings.py): each node keeps a contest's standings in memory and
-- reads only the submissions changed since its last read. `changed_xid` is the id of the transaction that
-- last wrote the row; a reader asks for rows with changed_xid >= the oldest transaction still running at
-- its previous read (pg_snapshot_xmin), so a transaction that commits late is never missed. Deleted rows
-- (a user or community deleted, cascading) leave a tombstone read the same way.

ALTER TABLE contest_submissions ADD COLUMN changed_xid bigint NOT NULL DEFAULT pg_current_xact_id()::text::bigint;
CREATE INDEX contest_submissions_changed ON contest_submissions (contest_id, changed_xid);

CREATE FUNCTION contest_submission_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.changed_xid := pg_current_xact_id()::text::bigint;
    RETURN NEW;
END $$;
CREATE TRIGGER contest_submission_changed BEFORE UPDATE ON contest_submissions
    FOR EACH ROW EXECUTE FUNCTION contest_submission_changed();

-- No foreign keys: a tombstone outlives its submission (and, harmlessly, its contest).
CREATE TABLE contest_submission_tombstones (
    contest_id    uuid NOT NULL,
    submission_id uuid NOT NULL,
    changed_xid   bigint NOT NULL DEFAULT pg_current_xact_id()::text::bigint
);
CREATE INDEX contest_submission_tombstones_changed ON contest_submission_tombstones (contest_id, changed_xid);

CREATE FUNCTION contest_submission_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO contest_submission_tombstones (contest_id, submission_id) VALUES (OLD.contest_id, OLD.id);
    RETURN OLD;
END $$;
CREATE TRIGGER contest_submission_deleted AFTER DELETE ON contest_submissions
    FOR EACH ROW EXECUTE FUNCTION contest_submission_deleted();
