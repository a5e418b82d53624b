"""The user's own data (GDPR articles 15, 17 and 20): export everything, delete the account.

- :mod:`core_api.privacy.registry`: every column of the schema that holds personal data or points at a
  user, with what an export includes and what a deletion does to it. ``tests/test_privacy.py`` reads the
  live schema and fails when a column that looks personal (a foreign key to ``users``, a ``*_by`` or
  ``*user_id`` column, an email, name, address or user agent) is not listed here, so a new table cannot
  forget the user's rights.
- :mod:`core_api.privacy.export`: ``POST /me/exports`` queues a background job (the jobs of
  :mod:`media.jobs`: progress as ``job:progress``, ``GET /jobs/{id}``) that writes a zip with one JSON file
  per table; ``GET /me/exports/{job_id}/download`` hands it to its owner.
- :mod:`core_api.privacy.erase`: ``DELETE /me`` (with the password) erases the account's personal data in one
  transaction: rows that are only the user's are deleted; the account row stays, anonymised, so what others
  depend on keeps its shape; chat messages stay as "Deleted user" unless the user asks to erase them too;
  the audit log is kept.
"""
