"""The caller's own account: sessions, password change and reset (issue 18, "Accounts").

- :mod:`core_api.accounts.sessions`: every sign-in is a session (``sessions``, one per refresh-token family);
  ``GET /me/sessions`` lists them, ``DELETE /me/sessions/{id}`` ends one, ``DELETE /me/sessions`` ends every
  other. An access token names its session, so ending a session stops its access token at the next request,
  not only its refresh token.
- :mod:`core_api.accounts.passwords`: ``POST /me/password`` (the current password, then the new one; every
  other session ends) and the reset by email: ``POST /auth/password-reset`` answers the same for every address
  and sends a one-time link only to an account's address; ``POST /auth/password-reset/confirm`` sets the new
  password with it (single use, expiring) and ends every session.
"""
