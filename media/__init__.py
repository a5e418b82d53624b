"""Uploads (tus), media storage, and background jobs with progress (video to an HLS ladder).

See docs/media.md. Modules: :mod:`media.tus` (the protocol's headers), :mod:`media.storage` (where bytes
live), :mod:`media.uploads` (resumable uploads), :mod:`media.wiring` (the app's media services).
"""
