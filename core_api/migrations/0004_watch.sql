-- Watch parties: the shared player of a room. One row per room holds the whole state as a JSON document
-- (current item, playing, position at a server time, rate, version, playlist, control, leader, ready
-- check and who is ready); writers lock the row, so nodes apply commands one at a time.

CREATE TABLE watch_parties (
    room_id    uuid PRIMARY KEY REFERENCES rooms (id) ON DELETE CASCADE,
    state      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
