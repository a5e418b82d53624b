-- A deleted account keeps its row (so what others depend on — their courses, rooms, contests, the audit
-- log, chat messages kept as "deleted user" — still refers to something), with its personal data erased.
ALTER TABLE users ADD COLUMN deleted_at timestamptz;
