-- Course announcements, per-user notification preferences, and the claims that make each deadline
-- reminder go out exactly once however many nodes run the reminder pass.
CREATE TABLE announcements (
    id         uuid PRIMARY KEY,
    course_id  uuid NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    author_id  uuid REFERENCES users (id) ON DELETE SET NULL,
    title      text NOT NULL,
    body       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX announcements_course ON announcements (course_id, created_at DESC, id DESC);

CREATE TABLE notification_preferences (
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind    text NOT NULL,
    in_app  boolean NOT NULL,
    email   boolean NOT NULL,
    PRIMARY KEY (user_id, kind)
);

CREATE TABLE reminder_claims (
    item_kind  text NOT NULL,  -- assignment | quiz
    item_id    uuid NOT NULL,
    lead_s     integer NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (item_kind, item_id, lead_s)
);
