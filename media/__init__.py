"""Uploads (tus), media storage, and background jobs with progress (video to an HLS ladder).

See docs/media.md. Modules: :mod:`media.tus` (the protocol's headers), :mod:`media.uploads` (resumable
uploads), :mod:`media.storage` (where bytes live), :mod:`media.jobs` (the jobs table, claims, the runner,
``/jobs``), :mod:`media.video` (lecture video: probe, ladder, poster), :mod:`media.playback` (serving a
ladder behind the lecture's paywall), :mod:`media.wiring` (the app's media services).
"""
