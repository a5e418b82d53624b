"""Watch parties: a room's shared player, kept in step on every viewer's screen.

``core`` (the pure state machine), ``drift`` and ``codec`` (pure), ``schemas`` (event payloads),
``store`` (Postgres), ``board`` (heartbeats: in-process or Redis), ``node`` (a node's cache, broadcasts,
upkeep and timers), ``progress`` (lecture resume points), ``service`` (use cases), ``handlers`` (the
Socket.IO event table), ``client`` (the reference client) and ``sim`` (simulated players, clocks and
links for tests and the benchmark).
"""
