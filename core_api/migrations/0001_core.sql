-- Core LMS schema: accounts, auth, courses, learning, communities, notifications, audit.
-- IDs are UUIDs (opaque strings to clients); times are timestamptz (UTC on the wire).

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    email         text NOT NULL,
    display_name  text NOT NULL,
    password_hash text NOT NULL,
    role          text NOT NULL DEFAULT 'student' CHECK (role IN ('student', 'instructor', 'admin')),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
CREATE INDEX users_page ON users (created_at, id);

-- Refresh tokens rotate: each use spends the token and issues the next one in the same family.
-- Presenting a spent token again means it leaked, so the whole family is revoked.
CREATE TABLE refresh_tokens (
    id          uuid PRIMARY KEY,
    family_id   uuid NOT NULL,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash  bytea NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    spent_at    timestamptz,
    revoked_at  timestamptz
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

CREATE TABLE courses (
    id           uuid PRIMARY KEY,
    owner_id     uuid NOT NULL REFERENCES users (id),
    title        text NOT NULL,
    description  text NOT NULL DEFAULT '',
    status       text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'published')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX courses_page ON courses (created_at, id);
CREATE INDEX courses_owner ON courses (owner_id);

CREATE TABLE lectures (
    id          uuid PRIMARY KEY,
    course_id   uuid NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    position    integer NOT NULL,
    title       text NOT NULL,
    media_kind  text NOT NULL CHECK (media_kind IN ('video', 'hls')),
    media_url   text NOT NULL,
    duration_s  double precision NOT NULL CHECK (duration_s >= 0),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX lectures_course ON lectures (course_id, position);

CREATE TABLE enrollments (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    course_id   uuid NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    UNIQUE (user_id, course_id)
);
CREATE INDEX enrollments_course ON enrollments (course_id, created_at, id);
CREATE INDEX enrollments_user_page ON enrollments (user_id, created_at, id);

CREATE TABLE lecture_progress (
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    lecture_id  uuid NOT NULL REFERENCES lectures (id) ON DELETE CASCADE,
    course_id   uuid NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    position_s  double precision NOT NULL CHECK (position_s >= 0),
    completed   boolean NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, lecture_id)
);
CREATE INDEX lecture_progress_course ON lecture_progress (user_id, course_id);

CREATE TABLE assignments (
    id          uuid PRIMARY KEY,
    course_id   uuid NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    title       text NOT NULL,
    description text NOT NULL DEFAULT '',
    due_at      timestamptz NOT NULL,
    max_points  double precision NOT NULL CHECK (max_points > 0),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX assignments_course ON assignments (course_id, created_at, id);

CREATE TABLE submissions (
    id            uuid PRIMARY KEY,
    assignment_id uuid NOT NULL REFERENCES assignments (id) ON DELETE CASCADE,
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    body          text NOT NULL,
    late          boolean NOT NULL,
    submitted_at  timestamptz NOT NULL DEFAULT now(),
    grade         double precision,
    feedback      text,
    graded_at     timestamptz,
    graded_by     uuid REFERENCES users (id)
);
CREATE INDEX submissions_assignment ON submissions (assignment_id, submitted_at, id);
CREATE INDEX submissions_user ON submissions (user_id, assignment_id);

CREATE TABLE certificates (
    id          uuid PRIMARY KEY,
    code        text NOT NULL UNIQUE,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    course_id   uuid NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    issued_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, course_id)
);
CREATE INDEX certificates_user_page ON certificates (user_id, issued_at, id);

CREATE TABLE communities (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    description text NOT NULL DEFAULT '',
    visibility  text NOT NULL DEFAULT 'public' CHECK (visibility IN ('public', 'private')),
    created_by  uuid NOT NULL REFERENCES users (id),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX communities_name_key ON communities (lower(name));
CREATE INDEX communities_page ON communities (created_at, id);

CREATE TABLE community_members (
    community_id uuid NOT NULL REFERENCES communities (id) ON DELETE CASCADE,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role         text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    joined_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (community_id, user_id)
);
CREATE INDEX community_members_page ON community_members (community_id, joined_at, user_id);
CREATE INDEX community_members_user ON community_members (user_id);

CREATE TABLE notifications (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind        text NOT NULL,
    payload     jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    read_at     timestamptz
);
CREATE INDEX notifications_user_page ON notifications (user_id, created_at DESC, id DESC);

CREATE TABLE audit_log (
    id          uuid PRIMARY KEY,
    actor_id    uuid REFERENCES users (id) ON DELETE SET NULL,
    action      text NOT NULL,
    target_kind text NOT NULL,
    target_id   text NOT NULL,
    details     jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_page ON audit_log (created_at DESC, id DESC);
