"""Time-limited TURN credentials (coturn's TURN REST API scheme): computed as coturn checks them (against
``openssl``'s HMAC), handed out fresh in every ``live:join`` answer, and accepted by a real coturn
(``turnserver`` on 127.0.0.1, when installed), which relays for an issued credential and refuses an expired
or forged one."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection

from core_api.settings import ConfigError, IceServer
from live.turn import SERVER_USER, ice_servers_for, turn_credential
from tests.conftest import make_settings
from tests.live_helpers import live_room, live_tab
from tests.test_live_media import app_with, node

SECRET = "a-turn-secret-shared-with-coturn"
SERVERS = [{"urls": "stun:127.0.0.1:3478"}, {"urls": "turn:127.0.0.1:3478"},
           {"urls": "turn:other.example.com:3478", "username": "fixed", "credential": "static"}]  # fmt: skip


def openssl_credential(secret: str, username: str) -> str:
    """base64(HMAC-SHA1(secret, username)), computed by openssl rather than Python."""
    digest = subprocess.run(["openssl", "dgst", "-sha1", "-hmac", secret, "-binary"], input=username.encode(),
                            capture_output=True, check=True).stdout  # fmt: skip
    return subprocess.run(["openssl", "base64", "-A"], input=digest, capture_output=True, check=True).stdout.decode()


def test_credentials_are_what_coturn_computes(tmp_path: Path) -> None:
    expected = openssl_credential(SECRET, "1700000000:u1")
    assert turn_credential(SECRET, "u1", 1_700_000_000) == ("1700000000:u1", expected)
    settings = make_settings("postgresql://x/y", tmp_path, turn_secret=SECRET, turn_credential_ttl_s=600,
                             ice_servers=SERVERS)  # fmt: skip
    stun, turn, fixed = ice_servers_for(settings, "user-1", now=1_000_000)
    assert stun == IceServer(urls="stun:127.0.0.1:3478")  # STUN needs no credential
    assert turn.username == "1000600:user-1" and turn.credential == openssl_credential(SECRET, "1000600:user-1")
    assert (fixed.username, fixed.credential) == ("fixed", "static")  # a server given its own keeps it
    # Without the secret, the setting's servers go out as they are.
    plain = make_settings("postgresql://x/y", tmp_path, ice_servers=SERVERS)
    assert ice_servers_for(plain, "user-1") == list(plain.ice_servers)
    assert make_settings("postgresql://x/y", tmp_path, turn_secret="").turn_secret is None
    with pytest.raises(ConfigError, match="at least 16 characters"):
        make_settings("postgresql://x/y", tmp_path, turn_secret="short")


async def test_every_join_hands_out_fresh_unexpired_credentials(
    aiohttp_client: Any, database_url: str, tmp_path: Path
) -> None:
    api = await app_with(aiohttp_client, database_url, tmp_path, turn_secret=SECRET, turn_credential_ttl_s=120,
                         ice_servers=SERVERS)  # fmt: skip
    host, member = await api.user("instructor"), await api.user()
    _, session_id = await live_room(api, host, member)
    tab = await live_tab(api, member)
    try:
        before = int(time.time())
        first = (await tab.ok("live:join", {"session_id": session_id}))["ice_servers"]
        turn = next(s for s in first if s["urls"] == "turn:127.0.0.1:3478")
        expiry, user = turn["username"].split(":")
        assert user == member.id and before + 120 <= int(expiry) <= int(time.time()) + 120
        assert turn["credential"] == openssl_credential(SECRET, turn["username"])
        await tab.ok("live:leave", {"session_id": session_id})
        await asyncio.sleep(1.1)
        again = (await tab.ok("live:join", {"session_id": session_id}))["ice_servers"]
        later = next(s for s in again if s["urls"] == "turn:127.0.0.1:3478")
        assert int(later["username"].split(":")[0]) > int(expiry)  # made now, not an older one handed again
        assert {"urls": "stun:127.0.0.1:3478"} in again
    finally:
        await tab.close()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[int]:
    """coturn on 127.0.0.1 with the REST API scheme (what docker-compose.yml runs), on a free port."""
    if shutil.which("turnserver") is None:
        pytest.skip("coturn is not installed (apt-get install -y coturn): the relay through it is not tested")
    port = free_udp_port()
    relay = free_udp_port() // 100 * 100 % 50_000 + 10_000
    log = tmp_path / "turn.log"
    proc = subprocess.Popen(
        ["turnserver", "-n", "--listening-ip=127.0.0.1", f"--listening-port={port}", "--relay-ip=127.0.0.1",
         f"--min-port={relay}", f"--max-port={relay + 40}", "--use-auth-secret", f"--static-auth-secret={SECRET}",
         "--realm=studyhall", "--no-tls", "--no-dtls", "--no-cli", "--allow-loopback-peers", "--fingerprint",
         f"--log-file={log}", "--simple-log", f"--pidfile={tmp_path / 'turn.pid'}",
         f"--userdb={tmp_path / 'turndb'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not (log.exists() and "Total General servers" in log.read_text(errors="replace")):
            assert proc.poll() is None and time.monotonic() < deadline, "coturn did not start"
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def relayed(server: dict[str, Any], attempts: int = 3) -> list[str]:
    """Relay candidates through ``server``, asked up to ``attempts`` times (an allocation's request may time out
    on a machine this busy; a refused credential is refused every time)."""
    for _ in range(attempts):
        if found := await relay_candidates(server):
            return found
    return []


async def relay_candidates(server: dict[str, Any]) -> list[str]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[RTCIceServer(**server)]))
    try:
        pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        return [line for line in pc.localDescription.sdp.splitlines() if "typ relay" in line]
    finally:
        await pc.close()


async def test_coturn_relays_for_an_issued_credential_and_not_an_expired_one(
    coturn: int, aiohttp_client: Any, database_url: str, tmp_path: Path
) -> None:
    url = f"turn:127.0.0.1:{coturn}"
    api = await app_with(aiohttp_client, database_url, tmp_path, turn_secret=SECRET, ice_servers=[{"urls": url}])
    host = await api.user("instructor")
    _, session_id = await live_room(api, host)
    tab = await live_tab(api, host)
    try:
        settings = node(api).settings
        issued = (await tab.ok("live:join", {"session_id": session_id}))["ice_servers"]
        assert [s["urls"] for s in issued] == [url]
        candidates = await relayed(issued[0])
        assert candidates and all("127.0.0.1" in c for c in candidates), candidates
        # The server's own peers get theirs too.
        assert await relayed(ice_servers_for(settings, SERVER_USER)[0].model_dump())
        # Expired (made two TTLs ago) or forged: coturn refuses the allocation, so no relay candidate.
        stale = ice_servers_for(settings, host.id, now=time.time() - 2 * settings.turn_credential_ttl_s)
        assert await relay_candidates(stale[0].model_dump()) == []
        assert await relay_candidates({**issued[0], "credential": "AAAA" + issued[0]["credential"][4:]}) == []
    finally:
        await tab.close()
