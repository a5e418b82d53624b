-- Learners apply to teach; admins approve (the role becomes instructor) or reject.
CREATE TABLE teacher_applications (
    id             uuid PRIMARY KEY,
    user_id        uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    qualifications text NOT NULL,
    links          text[] NOT NULL DEFAULT '{}',
    state          text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'approved', 'rejected', 'withdrawn')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    decided_at     timestamptz,
    decided_by     uuid REFERENCES users (id) ON DELETE SET NULL,
    note           text NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX teacher_applications_one_pending ON teacher_applications (user_id) WHERE state = 'pending';
CREATE INDEX teacher_applications_queue ON teacher_applications (state, created_at, id);
CREATE INDEX teacher_applications_user ON teacher_applications (user_id, created_at DESC);
