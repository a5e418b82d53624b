"""Telling learners what is new and what is due (issue 17, "Announcements and reminders").

- :mod:`~core_api.announcements.preferences`: per user and kind, in-app and email on or off.
- :mod:`~core_api.announcements.fanout`: :func:`notify_learners`, one statement for every enrolled learner who
  wants it, mails after commit (``Tx.mail``: SMTP, or the mail directory in development).
- :mod:`~core_api.announcements.posts`: instructors post course announcements.
- :mod:`~core_api.announcements.reminders`: deadline reminders (24 h and 1 h before by default) for
  assignments not yet handed in and quizzes not yet taken, each sent exactly once across nodes.
"""
