"""Search (issue 18): one endpoint over courses, lectures, chat messages, forum posts and users, with Postgres
full-text search. ``schemas`` (the query and the hits), ``core`` (pure: words, kinds, cursors, highlighted
snippets), ``store`` (the SQL of each kind, each with its visibility rule), ``service`` (limits, who may search
what) and ``handlers`` (REST). The search columns and their indexes are in migrations 0027 and 0033 (forums).
See docs/api.md."""
