"""The attack suite: hostile programs sent to a real ``studyhall serve`` process over REST.

Each attack must be contained with the status that says what happened, while the server keeps
answering: during every attack a watcher keeps calling ``/healthz`` and ``/api/v1/languages``, and
another user's ordinary program runs to completion at the same time. The host is checked afterwards
for anything an attack could have left behind (files, processes, connections).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import TEST_JWT_SECRET
from tests.nodes import Node, User, register, rest, stop_pid

pytestmark = pytest.mark.usefixtures("sandbox_machine")


@dataclass
class Server:
    node: Node
    data_dir: Path


@pytest.fixture(scope="module")
def server(database_url: str, sandbox_machine: None) -> Iterator[Server]:
    log_dir = Path(tempfile.mkdtemp(prefix="studyhall-attacks-"))
    data_dir = log_dir / "data"
    data_dir.mkdir()
    (data_dir / "secret.txt").write_text("the server's own data")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDYHALL_")}
    env.update(
        PYTHONUNBUFFERED="1",
        STUDYHALL_DATABASE_URL=database_url,
        STUDYHALL_JWT_SECRET=TEST_JWT_SECRET,
        STUDYHALL_DATA_DIR=str(data_dir),
        STUDYHALL_ARGON2_TIME_COST="1",
        STUDYHALL_ARGON2_MEMORY_KIB="8192",
        STUDYHALL_LOG_LEVEL="WARNING",
        STUDYHALL_SANDBOX_WORKERS="2",
        STUDYHALL_SANDBOX_REQUIRED="true",
        STUDYHALL_SANDBOX_CPU_MS="2000",
        STUDYHALL_SANDBOX_WALL_MS="4000",
        STUDYHALL_SANDBOX_MEMORY_KB=str(96 * 1024),
        STUDYHALL_SANDBOX_PROCESSES="32",
        STUDYHALL_SANDBOX_OUTPUT_BYTES="16384",
        STUDYHALL_SANDBOX_FILE_SIZE_KB="8192",
        STUDYHALL_REGISTER_MAX_PER_ADDRESS="1000000",  # every attacker registers from 127.0.0.1
    )
    node = Node("attacks", env, log_dir)
    try:
        node.wait_ready()
        yield Server(node, data_dir)
    finally:
        stop_pid(node.proc, signal.SIGTERM)
        shutil.rmtree(log_dir, ignore_errors=True)


async def _watch(base: str, stop: asyncio.Event, answers: list[int]) -> None:
    """Keep asking the server for cheap answers until told to stop."""
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            for path in ("/healthz", "/api/v1/languages"):
                started = time.monotonic()
                async with session.get(base + path, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                    await resp.read()
                    answers.append(resp.status)
                assert time.monotonic() - started < 5
            await asyncio.sleep(0.02)


async def attack(server: Server, body: dict[str, Any]) -> dict[str, Any]:
    """Run a hostile program while the server is watched and a bystander runs an ordinary one."""
    base = server.node.url
    attacker, bystander = await register(base), await register(base)
    stop = asyncio.Event()
    answers: list[int] = []
    watcher = asyncio.create_task(_watch(base, stop, answers))
    ordinary = {"language": "python", "source": "import time\ntime.sleep(0.3)\nprint(sum(range(10)))"}
    try:
        (status, result), (by_status, by_result) = await asyncio.gather(
            rest(base, "POST", "/executions?wait=true", attacker, json=body),
            rest(base, "POST", "/executions?wait=true", bystander, json=ordinary),
        )
    finally:
        stop.set()
        await watcher
    assert status == 200, result
    assert (by_status, by_result["status"], by_result["stdout"]) == (200, "ok", "45\n"), by_result
    assert answers and set(answers) == {200}
    assert isinstance(result, dict)
    return result


def py(source: str, **limits: int) -> dict[str, Any]:
    return {"language": "python", "source": source, **({"limits": limits} if limits else {})}


def exists_on_host(path: str) -> bool:
    return os.path.lexists(path)


def sandbox_processes() -> list[str]:
    """Command lines of every process on the host running as the sandbox user."""
    import pwd

    uid = pwd.getpwnam("studyhall-sandbox").pw_uid
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid == uid:
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return found


# --- network ---------------------------------------------------------------------------------------


async def test_connecting_to_a_listener_on_the_hosts_loopback(server: Server) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        source = f"""
import socket
for family, address in ((socket.AF_INET, ("127.0.0.1", {port})), (socket.AF_INET6, ("::1", {port}))):
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_RAW):
        try:
            socket.socket(family, kind)
            print("created", family, kind)
        except OSError as exc:
            print("refused", exc.errno)
socket.create_connection(("127.0.0.1", {port}), timeout=1)
"""
        result = await attack(server, py(source))
        assert result["status"] == "runtime_error"
        assert result["stdout"].split("\n")[:6] == ["refused 13"] * 6
        assert "PermissionError" in result["stderr"]
        with pytest.raises(TimeoutError):
            listener.accept()  # nobody came


async def test_raw_socket_and_io_uring_system_calls(server: Server) -> None:
    source = r"""
#include <errno.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void) {
    long s = syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
    printf("socket %ld errno %d\n", s, errno);
    long u = syscall(425, 8, NULL);  /* io_uring_setup: could open sockets without socket() */
    printf("io_uring %ld errno %d\n", u, errno);
    long unix_socket = syscall(SYS_socket, AF_UNIX, SOCK_STREAM, 0);
    printf("unix %s\n", unix_socket >= 0 ? "allowed" : "refused");
    return s < 0 ? 1 : 0;
}
"""
    result = await attack(server, {"language": "c", "source": source})
    assert result["status"] == "runtime_error" and result["exit_code"] == 1
    assert result["stdout"] == "socket -1 errno 13\nio_uring -1 errno 38\nunix allowed\n"


async def test_dns_lookup(server: Server) -> None:
    result = await attack(server, py("import socket\nprint(socket.getaddrinfo('example.com', 443))"))
    assert result["status"] == "runtime_error"
    assert "gaierror" in result["stderr"]


# --- the file system -------------------------------------------------------------------------------


async def test_reading_secrets_root_and_the_servers_data(server: Server) -> None:
    targets = ["/etc/shadow", "/etc/passwd", "/root", str(server.data_dir), str(server.data_dir / "secret.txt"),
               "/var/lib/studyhall", f"/proc/{server.node.proc.pid}/environ", "/sys/fs/cgroup", "/home"]  # fmt: skip
    source = f"""
import os
for path in {targets!r}:
    try:
        print(path, "listed" if os.path.isdir(path) and os.listdir(path) is not None else open(path).read()[:20])
    except OSError as exc:
        print(path, type(exc).__name__)
print(sorted(os.listdir("/")))
open("/etc/shadow").read()
"""
    result = await attack(server, py(source))
    assert result["status"] == "runtime_error"
    lines = result["stdout"].splitlines()
    assert lines[: len(targets)] == [f"{t} FileNotFoundError" for t in targets]
    assert lines[len(targets)] == str(
        [".init", "bin", "dev", "etc", "lib", "lib64", "proc", "sbin", "tmp", "usr", "work"]
    )


async def test_proc_reveals_nothing_of_the_host_server_or_pool(server: Server) -> None:
    """``/proc/self/mountinfo`` and ``/proc/self/cgroup`` named the runtime directory, the init helper's
    path, the pool (the server's PID and start time) and the slot: none of it may show."""
    files = ["/proc/self/mountinfo", "/proc/self/cgroup", "/proc/1/mountinfo", "/proc/1/cgroup",
             "/proc/self/mounts", "/proc/self/cpuset"]  # fmt: skip
    source = f"""
for path in {files!r}:
    try:
        print("==", path)
        print(open(path).read())
    except OSError as exc:
        print(path, type(exc).__name__)
"""
    result = await attack(server, py(source))
    assert result["status"] == "ok", result
    seen = result["stdout"]
    assert "== /proc/self/mountinfo\n" in seen and " /work " in seen  # the files were read
    pid = server.node.proc.pid
    for secret in ("studyhall", "/run/", "slot-", "init-", f"{pid}-", "/.."):
        assert secret not in seen, (secret, seen)
    assert re.search(rf"\b{pid}\b", seen) is None, seen
    cgroups = [line for line in seen.splitlines() if re.fullmatch(r"\d+:[^:]*:.*", line)]
    assert cgroups and all(line.endswith(":/") for line in cgroups), cgroups  # the sandbox's own cgroup is its root


async def test_writing_outside_the_work_directory(server: Server) -> None:
    marker = f"pwned-{random.randrange(10**9)}"
    targets = [
        f"/usr/{marker}",
        f"/etc/{marker}",
        f"/{marker}",
        f"/dev/{marker}",
        f"/proc/{marker}",
        "/usr/bin/python3",
    ]
    source = f"""
for path in {targets!r}:
    try:
        open(path, "a").write("x")
        print(path, "written")
    except OSError as exc:
        print(path, exc.errno)
for path in ("/work/ok", "/tmp/ok", "/dev/shm/ok"):
    open(path, "w").write("x")
    print(path, "written")
open({targets[0]!r}, "w")
"""
    result = await attack(server, py(source))
    assert result["status"] == "runtime_error"
    lines = result["stdout"].splitlines()
    assert all(not line.endswith("written") for line in lines[: len(targets)]), lines
    assert lines[len(targets) :] == ["/work/ok written", "/tmp/ok written", "/dev/shm/ok written"]
    assert not any(map(exists_on_host, targets[:3]))


async def test_a_file_of_several_gigabytes(server: Server) -> None:
    python = await attack(
        server, py("with open('big', 'wb') as f:\n    for _ in range(4096):\n        f.write(b'x' * (1 << 20))")
    )
    assert python["status"] == "output_limit_exceeded", python
    assert "file size limit" in python["message"]
    sparse = await attack(server, py("with open('big', 'wb') as f:\n    f.seek(5 << 30)\n    f.write(b'x')"))
    assert sparse["status"] == "runtime_error" and "File too large" in sparse["stderr"]
    c = await attack(
        server,
        {"language": "c", "source": "#include <stdio.h>\nint main(void){static char mb[1<<20];"
         ' FILE *f = fopen("big", "wb"); for (int i = 0; i < 4096; i++) fwrite(mb, 1, sizeof mb, f); return 0;}'},
    )  # fmt: skip
    assert (c["status"], c["signal"]) == ("output_limit_exceeded", 25), c  # SIGXFSZ


# --- processes -------------------------------------------------------------------------------------


async def test_fork_bomb(server: Server) -> None:
    result = await attack(server, py("import os\nwhile True:\n    os.fork()"))
    assert result["status"] == "runtime_error", result
    assert "process limit of 32 was reached" in result["message"]
    assert not any("python3" in cmd for cmd in sandbox_processes())


async def test_memory_bomb(server: Server) -> None:
    result = await attack(server, py("data = []\nwhile True:\n    data.append(' ' * (1 << 20))"))
    assert result["status"] == "memory_limit_exceeded", result
    assert result["memory_kb"] >= 90 * 1024


async def test_infinite_loop(server: Server) -> None:
    result = await attack(server, {"language": "cpp", "source": "int main(){ volatile long i = 0; for (;;) i++; }"})
    assert result["status"] == "time_limit_exceeded", result
    # Killed by its CPU limit; on a machine so busy that the loop got less than half a core, the wall
    # limit (twice the CPU limit) comes first: either way it was stopped.
    assert result["cpu_ms"] > 2000 or result["wall_ms"] >= 4000, result
    assert result["compile"]["status"] == "ok"


async def test_sleeping_forever(server: Server) -> None:
    result = await attack(server, {"language": "javascript", "source": "setInterval(() => {}, 1000)"})
    assert result["status"] == "time_limit_exceeded" and result["wall_ms"] >= 4000
    assert result["cpu_ms"] < 2000


async def test_output_flood(server: Server) -> None:
    result = await attack(
        server, py("import sys\nwhile True:\n    sys.stdout.write('y' * 65536)\n    sys.stderr.write('n')")
    )
    assert result["status"] == "output_limit_exceeded" and result["truncated"] is True
    assert len(result["stdout"]) == 16384


async def test_kill_every_process_it_can(server: Server) -> None:
    source = """
import os, signal, subprocess
child = subprocess.Popen(["/usr/bin/sleep", "100"])
os.kill(-1, signal.SIGKILL)
print("still here as pid", os.getpid(), "; my child got", child.wait())
"""
    result = await attack(server, py(source))
    assert result["status"] == "ok", result
    # Only the program's own processes are in reach: pid 1 is the sandbox's init, and it is spared.
    assert result["stdout"] == "still here as pid 2 ; my child got -9\n"
    assert server.node.alive


async def test_setuid(server: Server) -> None:
    source = """
import os, subprocess
print("euid", os.geteuid() != 0)
for argv in (["/usr/bin/mount", "-t", "tmpfs", "none", "/work"], ["/usr/bin/su", "-c", "id -u", "root"]):
    done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    print(argv[0], done.returncode != 0)
os.setuid(0)
"""
    result = await attack(server, py(source))
    assert result["status"] == "runtime_error"
    assert result["stdout"] == "euid True\n/usr/bin/mount True\n/usr/bin/su True\n"
    assert "os.setuid(0)" in result["stderr"] and "OSError: [Errno 22]" in result["stderr"]  # root is not even mapped


async def test_a_daemonised_grandchild_does_not_outlive_the_run(server: Server) -> None:
    marker = f"{random.randrange(10**6)}.{random.randrange(10**6)}"
    source = f"""
import os, sys
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv("/usr/bin/sleep", ["sleep", "{marker}"])
    os._exit(0)
os.wait()
print("parent leaves")
"""
    result = await attack(server, py(source))
    assert result["status"] == "ok" and result["stdout"] == "parent leaves\n"
    assert not any(marker in cmd for cmd in sandbox_processes())


async def test_the_server_still_serves_after_the_attacks(server: Server) -> None:
    base = server.node.url
    user: User = await register(base)
    status, done = await rest(base, "POST", "/executions?wait=true", user, json=py("print('fine')"))
    assert (status, done["status"], done["stdout"]) == (200, "ok", "fine\n")
    async with aiohttp.ClientSession() as session, session.get(base + "/readyz") as resp:
        assert resp.status == 200
    leftovers = [cmd for cmd in sandbox_processes() if not cmd.startswith(("/.init", "/usr/bin/bwrap", "bwrap"))]
    assert leftovers == []
