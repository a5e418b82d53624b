-- A lecture's HLS ladder that no lecture plays any more (replaced by a new video, the lecture switched to another
-- URL or deleted) is removed after STUDYHALL_MEDIA_LADDER_KEEP_S (media/video.py remove_unused_ladders):
-- ladder_unused_since is when the sweep first found it unused (cleared if the lecture uses it again),
-- output_removed_at when its files went.
ALTER TABLE jobs ADD COLUMN ladder_unused_since timestamptz;
ALTER TABLE jobs ADD COLUMN output_removed_at timestamptz;
CREATE INDEX jobs_live_ladders ON jobs (id) WHERE kind = 'lecture_video' AND state = 'succeeded'
    AND output_removed_at IS NULL;
