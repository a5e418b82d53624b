-- With an S3 bucket (media/s3.py) a tus upload is received into a multipart upload started when the upload is
-- created: its id, so that any node (not only the one that started it) sends the next parts and completes it.
-- NULL: the upload is on the local disk (no bucket, or received before one was configured, or a recording).
ALTER TABLE uploads ADD COLUMN store_ref text;
