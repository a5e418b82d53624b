"""Running a ``studyhall worker`` process: the part the sandbox and media workers share.

Each kind of worker has a *host* (an asyncio loop in a thread holding the database pool and the runner) and a
Celery application; :func:`serve_worker` starts the host, registers its task, runs Celery's thread-pool worker
on one queue until it is stopped (SIGTERM: the running jobs finish), and always stops the host.
"""

from __future__ import annotations

import os
import socket
import sys
import warnings
from typing import Any, Protocol

from celery import Celery


class WorkerHost(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...

    def register(self, app: Celery) -> None: ...


def serve_worker(
    host: WorkerHost, app: Celery, *, queue: str, name: str, concurrency: int, loglevel: str, ready: str
) -> int:
    """Run the worker; ``name`` prefixes Celery's node name, ``ready`` is printed once it takes jobs. Returns
    the process's exit status (1 when the host cannot start, with the reason on stderr)."""
    try:
        host.start()
    except Exception as exc:
        host.stop()
        print(f"studyhall worker: {exc}", file=sys.stderr)
        return 1
    host.register(app)

    from celery.signals import worker_ready

    def announce(**_: Any) -> None:
        print(ready, flush=True)

    worker_ready.connect(announce, weak=False)
    # The sandbox worker must be root to create the sandboxes' cgroups and mounts (programs never run as root,
    # and only JSON is accepted, never pickle): Celery's warning about root does not apply.
    warnings.filterwarnings("ignore", message="You're running the worker with superuser privileges")
    try:
        app.worker_main(
            [
                "worker", "--pool=threads", f"--concurrency={concurrency}", f"--queues={queue}",
                f"--hostname={name}-{os.getpid()}@{socket.gethostname()}", f"--loglevel={loglevel}",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
            ]
        )  # fmt: skip
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int | None) else 1
    finally:
        host.stop()
    return 0
