"""Quizzes and the gradebook (issue 17): ``schemas`` (bodies, views with and without answer keys),
``core`` (pure: stored questions, shuffling, grading, statistics, CSV), ``store`` (SQL), ``service`` (use
cases and who may call them) and ``handlers`` (REST). See docs/quizzes.md."""
