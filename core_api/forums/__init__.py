"""Forums: community and course discussion boards (topics, threaded replies, votes, accepted answers,
pins and locks, mentions). See docs/forums.md."""
