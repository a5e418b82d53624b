"""Live sessions: the schedule (``schedule``), WebRTC signalling over Socket.IO (``signalling``) and the
selective forwarding unit that hands each publisher's encoded media to every viewer (``sfu``).

See docs/live.md for what is built and what is not yet.
"""
