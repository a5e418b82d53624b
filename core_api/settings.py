"""Settings: one typed object read once from the environment (prefix ``STUDYHALL_``).

Every setting has a default that works on a fresh machine (embedded mode). ``load_settings`` turns a
validation failure into :class:`ConfigError`, whose message names the bad setting by its variable name.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

ENV_PREFIX = "STUDYHALL_"
_ORIGIN = re.compile(r"https?://([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?")


def default_data_dir() -> Path:
    """Where the embedded database and generated secrets live when ``STUDYHALL_DATA_DIR`` is unset.

    Run as root, the embedded Postgres runs as an unprivileged system user that must traverse every
    parent of its data directory, so the default must never sit inside a private home such as /root:
    root gets ``/var/lib/studyhall``. Other users get ``$XDG_DATA_HOME/studyhall`` (usually
    ``~/.local/share/studyhall``), which nobody else needs to read.
    """
    if os.geteuid() == 0:
        return Path("/var/lib/studyhall")
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "studyhall"


class IceServer(BaseModel):
    """A STUN or TURN server for WebRTC (the browser's ``RTCIceServer``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    urls: str = Field(pattern=r"^(stun|stuns|turn|turns):", max_length=500)
    username: str | None = Field(None, max_length=200)
    credential: str | None = Field(None, max_length=200)


class ConfigError(Exception):
    """A setting is missing or invalid; the message names it."""


class Settings(BaseSettings):
    """All of studyhall's configuration.

    Attributes map to environment variables by upper-casing and prefixing ``STUDYHALL_``
    (``database_url`` ← ``STUDYHALL_DATABASE_URL``).
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8080, ge=0, le=65535, description="Port to listen on (0 picks a free one).")
    data_dir: Path = Field(default_factory=default_data_dir, description="Embedded database and secrets.")
    database_url: SecretStr | None = Field(
        None, description="postgresql:// URL of an external Postgres; unset starts the embedded one."
    )
    redis_url: SecretStr | None = Field(None, description="redis:// URL; set for scaled mode.")
    jwt_secret: SecretStr | None = Field(
        None, description="HS256 key for access tokens; generated into the data directory when unset."
    )
    public_url: str = Field(
        "", description="Base URL users reach the server at (certificate links); default http://host:port."
    )
    web_dir: Path | None = Field(
        None,
        description="The built web app served at / (its index.html and hashed assets); unset: web/dist of the "
        "source checkout (scripts/setup builds it).",
    )
    access_token_ttl_s: int = Field(900, ge=30, le=86400, description="Access token lifetime.")
    refresh_token_ttl_s: int = Field(30 * 86400, ge=300, description="Refresh token lifetime.")
    refresh_reuse_grace_s: float = Field(
        30,
        ge=0,
        le=300,
        description="A spent refresh token presented again within this many seconds, before its successor was used, "
        "is a retry whose answer was lost (a page closed or a network dropped mid-refresh), not a theft: it gets a "
        "new token of the same session instead of signing the session out. 0: any reuse signs the session out.",
    )
    max_body_bytes: int = Field(1024 * 1024, ge=1024, description="Largest accepted request body.")
    login_max_failures_per_account: int = Field(
        10, ge=1, description="Failed logins per account within the window before rate limiting."
    )
    login_max_failures_per_address: int = Field(
        50, ge=1, description="Failed logins per client address within the window before rate limiting."
    )
    login_window_s: int = Field(900, ge=1, description="Window for the login failure counters.")
    display_name_changes_per_day: int = Field(
        3,
        ge=1,
        le=100,
        description="How many times a user may change their display name (PATCH /me) in any 24 hours; more "
        "answer 429 (`rate_limited`, with Retry-After). Each change is in the audit log.",
    )
    db_pool_min: int = Field(2, ge=1, description="Postgres pool: connections kept open.")
    db_pool_max: int = Field(20, ge=1, description="Postgres pool: most connections.")
    argon2_time_cost: int = Field(2, ge=1, description="argon2id iterations.")
    argon2_memory_kib: int = Field(19456, ge=8192, description="argon2id memory per hash (KiB).")
    password_hash_queue: int = Field(
        64, ge=1, description="Password checks allowed to wait at once; past that, 503 with Retry-After."
    )
    password_hash_register_share: float = Field(
        0.25,
        gt=0,
        lt=1,
        description="Share of the password-hash queue and of the hashing threads that registrations may hold at "
        "once (at least one of each, never every thread); the rest is kept for logins, so a registration flood "
        "cannot lock users out. Past it a registration gets 503 with Retry-After.",
    )
    register_max_per_address: int = Field(
        30,
        ge=1,
        le=1_000_000,
        description="Accounts one client address (an IPv6 client's /64 network) may register within "
        "STUDYHALL_REGISTER_WINDOW_S; past that 429 with Retry-After. Counted in Redis when STUDYHALL_REDIS_URL is "
        "set, so every node shares the count.",
    )
    register_window_s: int = Field(
        3600, ge=1, le=7 * 86400, description="Sliding window of STUDYHALL_REGISTER_MAX_PER_ADDRESS, in seconds."
    )
    password_reset_ttl_s: int = Field(
        3600, ge=60, le=7 * 86400, description="How long a password reset link works (it works once)."
    )
    password_reset_max_per_address: int = Field(
        10,
        ge=1,
        le=1_000_000,
        description="Password reset requests one client address (an IPv6 client's /64) may make within "
        "STUDYHALL_PASSWORD_RESET_WINDOW_S; past that 429 with Retry-After (counted in Redis when scaled).",
    )
    password_reset_max_per_account: int = Field(
        3,
        ge=1,
        le=1000,
        description="Reset emails one account is sent within STUDYHALL_PASSWORD_RESET_WINDOW_S; requests past "
        "that get the same answer as any other but send nothing (no mailbox flooding, no account enumeration).",
    )
    password_reset_window_s: int = Field(
        3600, ge=1, le=7 * 86400, description="Sliding window of the two password reset limits, in seconds."
    )
    sessions_listed_max: int = Field(
        100, ge=1, le=10_000, description="Most sessions `GET /me/sessions` lists (the most recently used)."
    )
    data_export_max_rows: int = Field(
        200_000,
        ge=100,
        le=10_000_000,
        description="Most rows of one table a data export includes (it says when a table was cut).",
    )
    data_exports_per_day: int = Field(
        3, ge=1, le=100, description="Data exports one user may ask for in any 24 hours (then 429 with Retry-After)."
    )
    teacher_reapply_after_s: int = Field(
        7 * 86400, ge=0, le=365 * 86400, description="How long after a rejected application to teach one may reapply."
    )
    teacher_application_notify_max: int = Field(
        20, ge=0, le=1000, description="Admins notified of a new application to teach (the longest-standing first)."
    )
    avatar_max_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Largest profile picture accepted (also capped by STUDYHALL_MAX_BODY_BYTES).",
    )
    avatar_changes_per_hour: int = Field(10, ge=1, le=1000, description="Profile picture changes per user per hour.")
    avatar_encoders: int = Field(2, ge=1, le=64, description="Profile pictures re-encoded at once per node (ffmpeg).")
    avatar_encode_timeout_s: float = Field(
        10.0, gt=0, le=120, description="Longest ffmpeg may take to re-encode one profile picture."
    )
    announcements_per_hour: int = Field(
        10, ge=1, le=1000, description="Announcements one course may post per hour (each reaches every learner)."
    )
    reminder_cycle_s: float = Field(
        60.0, ge=0, le=3600, description="How often each node runs the deadline reminder pass; 0 turns it off."
    )
    reminder_leads_s: list[int] = Field(
        [86400, 3600],
        max_length=10,
        description="How long before a deadline learners are reminded, in seconds (JSON list; 24 h and 1 h).",
    )
    grade_sheet_max_rows: int = Field(
        100_000, ge=1, le=10_000_000, description="Most rows a bulk grade sheet may have (its job fails past it)."
    )
    assignment_file_max_bytes: int = Field(
        25 << 20, ge=1, le=1 << 32, description="Largest file a learner may attach to an assignment submission."
    )
    assignment_file_types: list[str] = Field(
        ["pdf", "txt", "md", "csv", "zip", "png", "jpg", "jpeg", "gif", "webp", "docx", "xlsx", "pptx", "odt",
         "ods", "odp", "py", "java", "c", "cpp", "h", "js", "ts", "ipynb", "json", "mp3", "mp4"],
        min_length=1,
        max_length=200,
        description="File name extensions learners may attach to submissions (JSON list, lowercase, no dot); the "
        "file is served with the content type its extension stands for.",
    )  # fmt: skip
    assignment_files_per_submission: int = Field(
        10, ge=1, le=1000, description="Most files one submission may hold (past it 409)."
    )
    assignment_file_quota_bytes: int = Field(
        1 << 30, ge=1, description="Most bytes of attachments one learner may hold in all (past it 413)."
    )
    assignment_files_per_hour: int = Field(
        60, ge=1, le=100_000, description="Files one learner may attach per hour (past it 429 with Retry-After)."
    )
    grade_sheet_max_bytes: int = Field(
        50 << 20, ge=1, description="Largest grade sheet file (CSV or XLSX) in bytes; a bigger one is refused (413)."
    )
    grade_sheet_xlsx_max_unpacked_bytes: int = Field(
        256 << 20,
        ge=1,
        description="Most bytes an XLSX grade sheet may unpack to in all (its zip directory says; past it the job "
        "fails as a zip bomb).",
    )
    grade_sheet_xlsx_max_ratio: float = Field(
        200.0,
        ge=1,
        description="Highest compression ratio of any member over 1 MiB of an XLSX grade sheet (past it the job "
        "fails as a zip bomb).",
    )
    contest_start_notice_s: int = Field(
        3600,
        ge=0,
        le=7 * 86400,
        description="How long before a contest starts its communities' members are told (once; 0: not at all).",
    )
    smtp_url: SecretStr | None = Field(
        None,
        description="Mail server for outgoing email (password resets): `smtp://user:password@host:587` (STARTTLS "
        "when offered) or `smtps://user:password@host:465` (TLS). Unset: messages are written to "
        "STUDYHALL_MAIL_DIR as .eml files instead (development).",
    )
    mail_from: str = Field(
        "studyhall <no-reply@studyhall.invalid>", max_length=320, description="The From header of outgoing email."
    )
    mail_dir: Path | None = Field(
        None, description="Where email is written when STUDYHALL_SMTP_URL is unset; default `<data dir>/mail`."
    )
    smtp_timeout_s: float = Field(20.0, gt=0, le=300, description="Longest wait for the mail server, per message.")
    presence_ttl_s: float = Field(
        10.0,
        ge=0.5,
        le=3600,
        description="Scaled mode: a node whose presence heartbeat is this old is taken for dead and its "
        "users leave their rooms.",
    )
    presence_heartbeat_s: float = Field(
        3.0, gt=0, le=600, description="Scaled mode: how often each node refreshes its heartbeat and sweeps dead nodes."
    )
    presence_batch_above: int = Field(
        100,
        ge=0,
        description="Rooms with more users than this get their presence changes coalesced into one "
        "room:presence_batch per STUDYHALL_PRESENCE_BATCH_S.",
    )
    presence_batch_s: float = Field(1.0, gt=0, le=60, description="How often a large room's presence changes go out.")
    presence_list_max: int = Field(
        500, ge=1, description="Most users listed in a room:join answer (member_count is exact)."
    )
    event_loop: Literal["asyncio", "uvloop"] = Field(
        "asyncio",
        description="The event loop `studyhall serve` runs on. asyncio: the standard library's. uvloop (installed "
        "with studyhall on Linux and macOS): the same code on libuv, 5-10 % less CPU per chat delivery and per "
        "collaborative edit, but large uploads are received at about half the speed per connection (aiohttp's "
        "body reading on uvloop; bench/RESULTS.md). /metrics shows the one in use (studyhall_event_loop).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Least severe log level printed."
    )
    trust_forwarded_for: bool = Field(
        False, description="Take the client address from X-Forwarded-For (only behind a trusted proxy)."
    )
    room_join_many_max_rooms: int = Field(
        100,
        ge=1,
        le=1000,
        description="Most rooms one room:join_many may join (a reconnecting client rejoins its open rooms in one "
        "event); a longer list is refused whole (`invalid_input`).",
    )
    room_join_many_max_messages: int = Field(
        200,
        ge=1,
        le=1000,
        description="Most missed chat messages one room's room:join_many result carries after its after_seq; "
        "past that the result says has_more and the client pages with chat:history.",
    )
    room_joins_at_once: int = Field(
        2,
        ge=1,
        le=10_000,
        description="Room joins (`room:join`, each room of `room:join_many`) one node works on at once; more wait "
        "their turn. When a node dies and its clients all rejoin on the others, this keeps the joins from taking "
        "every turn of the event loop: the chat of the clients already there keeps flowing, and the rejoins "
        "take a little longer.",
    )
    room_join_many_rate_count: int = Field(
        10,
        ge=1,
        le=10_000,
        description="room:join_many events one connection may send per STUDYHALL_ROOM_JOIN_MANY_RATE_WINDOW_S; "
        "more are refused (`rate_limited`).",
    )
    room_join_many_rate_window_s: float = Field(
        60.0, gt=0, le=3600, description="Window of the per-connection room:join_many limit."
    )
    chat_max_body: int = Field(4000, ge=1, le=16000, description="Longest chat message (characters, once cleaned).")
    chat_rate_count: int = Field(10, ge=1, le=1000, description="Chat messages one user may send per rate window.")
    chat_rate_window_s: float = Field(10.0, gt=0, le=3600, description="Window of the per-user chat rate limit.")
    forum_max_body: int = Field(
        20000,
        ge=1,
        le=100000,
        description="Longest forum post (characters, once cleaned), a topic's opening post included.",
    )
    forum_max_depth: int = Field(
        8, ge=1, le=64, description="How deep forum replies nest (a reply to the opening post is depth 1)."
    )
    forum_rate_count: int = Field(
        10, ge=1, le=10000, description="Forum posts (new topics and replies) one user may write per forum window."
    )
    forum_rate_window_s: float = Field(60.0, gt=0, le=86400, description="Window of the per-user forum post limit.")
    forum_max_pinned: int = Field(10, ge=1, le=100, description="Most pinned topics on one board.")
    dm_max_participants: int = Field(
        8, ge=2, le=100, description="Most people in one direct-message conversation, its starter included."
    )
    dm_new_rate_count: int = Field(
        20, ge=1, le=10000, description="New direct-message conversations one user may start per DM rate window."
    )
    dm_new_rate_window_s: float = Field(
        3600.0, gt=0, le=86400 * 7, description="Window of the per-user limit on new direct-message conversations."
    )
    chat_group_commit: bool = Field(
        True,
        description="Group commit of chat:send: each node's writer stores the sends of the same few milliseconds "
        "in one transaction (each sender still acked only after the commit that stored its message). Off: each "
        "send commits on its own.",
    )
    chat_group_commit_max: int = Field(
        64, ge=1, le=1000, description="Most chat messages one group commit stores (the rest wait for the next)."
    )
    chat_group_commit_lanes: int = Field(
        2,
        ge=1,
        le=32,
        description="Chat writers committing side by side on each node (each room always in the same one; each "
        "holds a database connection while it commits).",
    )
    chat_group_commit_wait_s: float = Field(
        0.002,
        ge=0,
        le=0.1,
        description="How long the chat writer waits for more sends before committing a batch that is not full "
        "(sends that arrive while a commit is under way always wait for the next one). 0: no wait.",
    )
    chat_gap_wait_s: float = Field(
        0.5,
        ge=0.01,
        le=30,
        description="Chat is delivered in seq order on every node: a message that arrives before an earlier one "
        "waits this long for it, then the missing ones are read from Postgres (docs/rooms-and-chat.md).",
    )
    chat_position_check_s: float = Field(
        5.0,
        ge=0.1,
        le=600,
        description="How often each node compares the chat position of the rooms its connections follow with "
        "Postgres, to deliver a message whose sending node died between its commit and its broadcast.",
    )
    ping_interval_s: int = Field(
        25, ge=1, le=300, description="Socket.IO: how often the server pings each client (Engine.IO pingInterval)."
    )
    ping_timeout_s: int = Field(
        20, ge=1, le=300, description="Socket.IO: a client that has not answered a ping this long is disconnected."
    )
    ws_deflate: bool = Field(
        False,
        description="Per-message deflate on Socket.IO websockets through python-engineio's stock path, with "
        "context takeover (costs CPU and about 135 KB per client; see docs/fanout.md). Off: deflate is "
        "negotiated without context takeover and large messages share one compressed frame "
        "(`STUDYHALL_WS_COMPRESS_MIN_BYTES`).",
    )
    ws_compress_min_bytes: int = Field(
        1024,
        ge=0,
        le=16 * 1024 * 1024,
        description="Socket.IO websockets that negotiate per-message deflate (browsers do) get messages of at "
        "least this many bytes compressed, without context takeover: a room emit is compressed once and the "
        "same frame goes to every such connection. Smaller messages go out as they are. 0 declines deflate.",
    )
    ws_fanout_writer: Literal["c", "python", "transport"] = Field(
        "c",
        description="How a room emit writes its one frame to the recipients' sockets on asyncio's loop: `c` sends "
        "to all of them in one call (realtime/_sendmany.c, built at install; the Python loop where it could not "
        "be built), `python` the same loop in Python, `transport` asyncio's `transport.write` for each (the "
        "bytes and their order are the same; `c` costs the least CPU, see realtime/sendmany.py). Connections "
        "on uvloop or TLS always take `transport.write`.",
    )
    ws_compress_level: int = Field(
        1, ge=1, le=9, description="zlib level of those compressed messages (1: fastest; 9: smallest)."
    )
    ws_max_buffer: int = Field(
        8 * 1024 * 1024,
        ge=64 * 1024,
        description="A websocket client with more unsent bytes than this (it stopped reading) is disconnected.",
    )
    ws_max_fragments: int = Field(
        64,
        ge=1,
        le=100_000,
        description="Socket.IO websockets: most frames one message may be split into; a message in more frames "
        "closes the connection with 1009. Browsers and the official clients send each message in one frame.",
    )
    sio_connect_timeout_s: float = Field(
        10.0,
        ge=0.5,
        le=300,
        description="An Engine.IO session (Socket.IO's transport) that has not completed the Socket.IO connect "
        "with a valid token this long after it opened is closed.",
    )
    sio_anonymous_per_address: int = Field(
        64,
        ge=1,
        le=100_000,
        description="Engine.IO sessions not yet through the Socket.IO connect that one client address may hold "
        "at once; more answer 429 (`rate_limited`, with Retry-After). The address is the one REST uses "
        "(STUDYHALL_TRUST_FORWARDED_FOR).",
    )
    sio_anonymous_max: int = Field(
        2000,
        ge=1,
        le=1_000_000,
        description="Engine.IO sessions not yet through the Socket.IO connect that this node holds at once, from "
        "all addresses; more answer 503 (`unavailable`, with Retry-After).",
    )
    ws_ticket_ttl_s: float = Field(
        20.0,
        ge=1,
        le=300,
        description="How long a websocket ticket (POST /api/v1/auth/ws-ticket) stays valid; it is good for one "
        "connection.",
    )
    cors_origins: str = Field(
        "",
        description="Comma-separated origins (`https://app.example.com`) besides the server's own that browsers "
        "may call the REST API, Socket.IO and /yjs from. Empty: same origin only.",
    )
    metrics_token: SecretStr | None = Field(
        None,
        description="Bearer token that /metrics on the public port asks for (Prometheus: `authorization: "
        "{credentials: ...}`). Unset, together with STUDYHALL_METRICS_PORT: /metrics is not served.",
    )
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Serve /metrics on this port, a listener of its own (keep it off the internet); it asks "
        "for STUDYHALL_METRICS_TOKEN too when that is set.",
    )
    metrics_host: str | None = Field(None, description="Address of the metrics listener (default: STUDYHALL_HOST).")

    # --- the garbage collector (core_api/heap.py) ---
    gc_freeze: bool = Field(
        True,
        description="Keep long-lived objects (the app after start-up, contests' in-memory standings after a "
        "build) out of the garbage collector's full collections with `gc.freeze()`: without it a node holding a "
        "large contest pauses 100-300 ms now and then (bench/RESULTS.md). Off: the collector's defaults.",
    )
    gc_settle_min_interval_s: float = Field(
        60.0,
        ge=0,
        le=86400,
        description="Least time between two settles (a collection of the unfrozen objects, then a freeze) asked "
        "for by a standings build.",
    )
    gc_full_every_s: float = Field(
        3600.0,
        ge=0,
        le=7 * 86400,
        description="Every this many seconds the frozen objects are unfrozen, collected whole (one full pause, "
        "freeing cycles that became garbage after they were frozen) and frozen again; 0: never.",
    )

    # --- rights on open connections (realtime/rights.py) ---
    rights_recheck_s: float = Field(
        60.0,
        ge=1,
        le=3600,
        description="How often each node re-reads the platform role of every user holding an open Socket.IO or "
        "/yjs connection (one query per node), so a change made outside the API (the CLI, SQL) or whose event "
        "was lost still reaches open connections. Changes made through the API reach them at once.",
    )
    rights_recheck_parallel: int = Field(
        4,
        ge=1,
        le=64,
        description="Users whose open connections one node re-checks at once after their rights changed (each "
        "re-check holds a database connection while it reads).",
    )

    # --- progress and certificates (core_api/progress.py, core_api/watching.py) ---
    progress_max_rate: float = Field(
        2.0,
        ge=1,
        le=1000,
        description="Fastest playback that still counts as watching: progress reports moving further than this "
        "times the server-clock time between them, and watch parties playing faster, are not evidence; and no "
        "learner is credited more than this times the wall-clock time across all lectures. Tests raise it to "
        "play lectures faster than real time.",
    )
    progress_complete_share: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Share of a lecture's duration the server must have seen a learner watch for it to count as "
        "completed (certificates follow from completed lectures).",
    )
    progress_max_intervals: int = Field(
        256,
        ge=1,
        le=100_000,
        description="Most separate watched intervals kept per learner and lecture; a stretch that would make "
        "more (not merging with any) is not credited.",
    )

    # --- course management (core_api/catalog/, core_api/learners/) ---
    course_max_tags: int = Field(
        10,
        ge=1,
        le=100,
        description="Most tags a course may carry (after normalising and removing repeats); more answer 400. Also "
        "the most `tag` filters one catalogue request may carry.",
    )
    course_tag_max_length: int = Field(
        32,
        ge=1,
        le=200,
        description="Longest tag, in characters, after normalising (trimmed, lower-case, inner whitespace "
        "collapsed to one space); longer answers 400.",
    )
    course_category_max_length: int = Field(
        48,
        ge=1,
        le=200,
        description="Longest category, in characters, after normalising as tags are; longer answers 400.",
    )
    course_max_prerequisites: int = Field(
        10,
        ge=1,
        le=100,
        description="Most prerequisite courses one course may require; more answer 400.",
    )
    course_changes_per_hour: int = Field(
        120,
        ge=1,
        le=100_000,
        description="Course lifecycle and prerequisite changes (unpublish, publish again, archive, restore, delete, "
        "prerequisites) one owner may make in any hour, counted from the audit log (so across nodes); more answer "
        "429 (`rate_limited`, with Retry-After). Admins are not limited.",
    )
    continue_max_items: int = Field(
        20,
        ge=1,
        le=200,
        description="Most courses `GET /me/continue` answers with (its `limit` is capped at this).",
    )
    analytics_max_days: int = Field(
        366,
        ge=1,
        le=366,
        description="Longest window (`days`) of the analytics dashboards' day series; longer is refused (400).",
    )
    analytics_top_courses: int = Field(
        10, ge=1, le=100, description="Courses listed in the platform analytics' `top_courses`."
    )
    analytics_max_contests: int = Field(
        50, ge=1, le=500, description="Contests listed in a community's analytics (the latest ones)."
    )

    # --- watch parties (watch_party/) ---
    watch_start_lead_s: float = Field(
        0.15,
        ge=0,
        le=5,
        description="A play or seek starts at least this long after the server takes it (more when the room's "
        "slowest viewer needs longer to hear of it), so that every viewer starts on the same instant.",
    )
    watch_max_start_lead_s: float = Field(
        1.0, ge=0, le=10, description="The longest a play or seek waits for the room's slowest viewer."
    )
    watch_max_playlist: int = Field(100, ge=1, le=1000, description="Most items in a watch party's playlist.")
    watch_viewer_ttl_s: float = Field(
        10.0, gt=0, le=3600, description="A viewer without a heartbeat for this long drops out of the sync report."
    )
    watch_upkeep_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="How often each node looks after its watch rooms: leader still present, ready check met, "
        "item run out.",
    )
    watch_progress_interval_s: float = Field(
        15.0, ge=1, le=3600, description="Shortest time between two resume-point writes of a viewer watching a lecture."
    )
    watch_in_sync_s: float = Field(
        0.1, gt=0, le=60, description="The sync report calls a viewer in sync while their drift stays within this."
    )
    # The correction rule's thresholds: handed to clients in the watch:sync answer (`tuning`).
    watch_heartbeat_s: float = Field(1.0, ge=0.1, le=60, description="Clients: seconds between two heartbeats.")
    watch_hard_sync_s: float = Field(
        0.04, ge=0, le=60, description="Clients: on a new state version, seek if the player is off by more than this."
    )
    watch_seek_threshold_s: float = Field(
        0.5, gt=0, le=600, description="Clients: at any time, seek if the player is off by more than this."
    )
    watch_nudge_threshold_s: float = Field(
        0.005, gt=0, le=60, description="Clients: change the playback rate if the player is off by more than this."
    )
    watch_nudge_release_s: float = Field(
        0.001, ge=0, le=60, description="Clients: back to the normal rate once within this."
    )
    watch_max_nudge: float = Field(
        0.1, gt=0, le=0.5, description="Clients: largest relative rate change of a nudge (0.1 = ±10 %)."
    )
    watch_nudge_horizon_s: float = Field(
        1.0, gt=0, le=600, description="Clients: a nudge aims to cancel the drift over about this long."
    )

    # --- sandbox (code execution; see sandbox/ and docs/sandbox.md) ---
    sandbox_executor: Literal["auto", "local", "celery"] = Field(
        "auto",
        description="Where programs run: `local` (this process's pool), `celery` (workers started with "
        "`studyhall worker`, Redis broker), `auto` (celery when STUDYHALL_REDIS_URL is set).",
    )
    sandbox_required: bool = Field(
        False, description="Report not ready on /readyz (503) when this node cannot run sandboxes."
    )
    sandbox_workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1, ge=1, le=256, description="Programs run at once per process."
    )
    sandbox_queue: int = Field(32, ge=0, le=10000, description="Programs that may wait for a worker; then 429.")
    sandbox_per_user: int = Field(
        4,
        ge=1,
        le=1000,
        description="Programs one user may have waiting or running at once, executions and contest submissions "
        "together; then 429.",
    )
    sandbox_wait_timeout_s: float = Field(
        60.0, gt=0, le=600, description="Longest ?wait=true waits before answering 202 with the job still queued."
    )
    sandbox_bwrap: str = Field("bwrap", min_length=1, description="The bubblewrap program (name on PATH or path).")
    sandbox_user: str = Field(
        "studyhall-sandbox", pattern=r"^[a-z_][a-z0-9_-]{0,31}$", description="Unprivileged user sandboxes run as."
    )
    sandbox_runtime_dir: Path = Field(
        Path("/run/studyhall-sandbox"), description="Root-owned directory for the slots' work-directory mounts."
    )
    sandbox_cgroup_root: Path = Field(Path("/sys/fs/cgroup"), description="Where the cgroup hierarchies are mounted.")
    sandbox_cpus_per_run: float = Field(1.0, gt=0, le=64, description="CPU cores one run may use at once.")
    sandbox_work_dir_kb: int = Field(65536, ge=1024, description="Size of a run's work directory and /tmp together.")
    sandbox_cpu_ms: int = Field(5000, ge=100, description="Maximum (and default) CPU time of a run.")
    sandbox_wall_ms: int = Field(10000, ge=100, description="Maximum (and default) wall time of a run.")
    sandbox_memory_kb: int = Field(262144, ge=16384, description="Maximum (and default) memory of a run.")
    sandbox_processes: int = Field(64, ge=4, description="Maximum (and default) processes and threads of a run.")
    sandbox_output_bytes: int = Field(65536, ge=1024, description="Maximum (and default) stdout and stderr kept.")
    sandbox_file_size_kb: int = Field(16384, ge=64, description="Maximum (and default) size of a file a run writes.")
    sandbox_open_files: int = Field(128, ge=16, description="Maximum (and default) open files per process.")
    sandbox_compile_cpu_ms: int = Field(10000, ge=100, description="CPU time of a compile step.")
    sandbox_compile_wall_ms: int = Field(20000, ge=100, description="Wall time of a compile step.")
    sandbox_compile_memory_kb: int = Field(524288, ge=65536, description="Memory of a compile step.")
    run_input_max_bytes: int = Field(
        4096,
        ge=1,
        le=65536,
        description="Largest `run:input` event (bytes of UTF-8 text typed into a running program).",
    )
    run_input_total_bytes: int = Field(
        65536, ge=1, le=16 * 1024 * 1024, description="Bytes that may be typed into one run in all (`run:input`)."
    )
    run_input_per_s: float = Field(
        20.0, gt=0, le=1000, description="`run:input` events one connection may send per second (bursts of as many)."
    )
    run_follow_max: int = Field(
        16, ge=1, le=1000, description="Workspaces whose runs one connection may follow at once (`run:follow`)."
    )
    run_follow_per_s: float = Field(
        5.0, gt=0, le=1000, description="`run:follow` events one connection may send per second (bursts of as many)."
    )

    # --- uploads and background jobs (media) ---
    media_dir: Path | None = Field(
        None, description="Where uploads and transcoded media are stored (default: `<STUDYHALL_DATA_DIR>/media`)."
    )
    media_upload_max_bytes: int = Field(
        2 * 1024**3, ge=1024, description="Largest upload (tus `Tus-Max-Size`); a larger `Upload-Length` gets 413."
    )
    media_quota_bytes: int = Field(
        20 * 1024**3,
        ge=1024,
        description="Bytes of uploads one user may hold at once (finished and unfinished); past it, 413.",
    )
    media_uploads_per_user: int = Field(
        100, ge=1, le=100_000, description="Uploads one user may hold at once (finished and unfinished); past it, 429."
    )
    media_upload_expiry_s: int = Field(
        86400, ge=60, description="An unfinished upload untouched this long is deleted (tus `Upload-Expires`)."
    )
    media_sweep_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="How often expired uploads are removed, abandoned jobs picked up again and unused lecture "
        "ladders looked for.",
    )
    media_ladder_keep_s: float = Field(
        7 * 86400.0,
        ge=0,
        description="A lecture video's HLS ladder that no lecture plays any more (a new video replaced it, the "
        "lecture was switched to another URL or deleted) is kept this long, so pointing the lecture back at it "
        "(an undo) still works; then its files are removed. Counted from the sweep that first finds it unused.",
    )
    media_workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Media jobs (transcodes) one node, or one `studyhall worker -Q media`, runs at once.",
    )
    media_accel_prefix: str | None = Field(
        None,
        pattern=r"^/[A-Za-z0-9_./-]*/$",
        description="Behind nginx: the internal location (like `/_media/`) aliasing STUDYHALL_MEDIA_DIR. When set, "
        "HLS segments, posters, playlists without a token and submission files are answered, after the access "
        "check, with `X-Accel-Redirect: <prefix><path in the media directory>` and nginx sends the file.",
    )
    s3_bucket: str | None = Field(
        None,
        pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
        description="Set to keep media in this bucket of an S3-compatible store (MinIO, AWS S3, ...): tus uploads "
        "(received into multipart uploads), HLS ladders, grade-sheet results, data exports and submission files "
        "are stored there and served from there (behind the same access checks), so nodes and media workers "
        "share only the bucket; STUDYHALL_MEDIA_DIR is then only each machine's scratch space (a job's output "
        "while it is made, the copies a job reads). Unset: everything stays in STUDYHALL_MEDIA_DIR.",
    )
    s3_endpoint_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s/?#]+/?$",
        description="The S3 API's address (like `http://minio:9000`); unset: AWS S3 of STUDYHALL_S3_REGION.",
    )
    s3_region: str = Field("us-east-1", pattern=r"^[a-z0-9-]{1,40}$", description="The bucket's region.")
    s3_access_key_id: str | None = Field(
        None, description="The S3 access key; unset: boto's usual credential chain (environment, instance role)."
    )
    s3_secret_access_key: SecretStr | None = Field(
        None, description="The S3 secret key (with STUDYHALL_S3_ACCESS_KEY_ID)."
    )
    s3_prefix: str = Field(
        "",
        pattern=r"^([A-Za-z0-9_.-]+/)*$",
        description="Keys start with this (like `studyhall/`, ending with `/`): deployments can share a bucket.",
    )
    s3_serve: Literal["stream", "redirect"] = Field(
        "stream",
        description="How an allowed request for a stored object is answered: `stream` (studyhall reads it from the "
        "store and sends it, ranges included; needs nothing of the bucket) or `redirect` (302 to a presigned URL "
        "valid STUDYHALL_S3_PRESIGN_S; the bytes skip studyhall, but players need CORS on the bucket). Playlists "
        "with a playback token are always sent by studyhall (they are rewritten per token).",
    )
    s3_presign_s: int = Field(
        300, ge=10, le=7 * 86400, description="How long a presigned URL of STUDYHALL_S3_SERVE=redirect stays valid."
    )
    s3_public_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s/?#]+/?$",
        description="The store's address as browsers reach it, for presigned redirects (default: "
        "STUDYHALL_S3_ENDPOINT_URL).",
    )
    s3_concurrency: int = Field(
        8,
        ge=1,
        le=64,
        description="Objects one node or media worker uploads to the store at once (a ladder's segments).",
    )
    s3_upload_part_bytes: int = Field(
        8 * 1024 * 1024,
        ge=5 * 1024 * 1024,
        le=512 * 1024 * 1024,
        description="A tus upload goes into the bucket in parts of this size (S3 wants at least 5 MiB but for the "
        "last part): the bytes past the last whole part are kept as a `.tail` object until there is a part's "
        "worth. Each PATCH being received holds up to this much in memory (twice while a part is sent). At most "
        "10,000 parts: STUDYHALL_MEDIA_UPLOAD_MAX_BYTES / this must not exceed 10,000.",
    )
    media_executor: Literal["auto", "local", "celery"] = Field(
        "auto",
        description="Where media jobs (transcodes, grade sheets, data exports) run: `local` (in each node's process), "
        "`celery` (workers started with `studyhall worker -Q media`, Redis broker), `auto` (celery when "
        "STUDYHALL_REDIS_URL is set).",
    )
    media_celery_visibility_s: float = Field(
        3600.0,
        ge=10,
        le=7 * 86400,
        description="How long a media job's Celery message may stay unacknowledged (acks late) before the broker "
        "hands it to another worker; a job whose worker died is retried sooner, once its lease runs out.",
    )
    media_job_lease_s: float = Field(
        60.0,
        ge=5,
        le=3600,
        description="A running job's claim lasts this long unless its runner renews it; then another may take it.",
    )
    media_jobs_per_user: int = Field(
        3, ge=1, le=1000, description="Media jobs one user may have queued or running at once; past it, 429."
    )
    media_job_attempts: int = Field(3, ge=1, le=20, description="Times a job is tried before it is failed.")
    media_ffmpeg: str = Field("ffmpeg", min_length=1, description="The ffmpeg program (name on PATH or path).")
    media_ffprobe: str = Field("ffprobe", min_length=1, description="The ffprobe program (name on PATH or path).")
    media_ffmpeg_threads: int = Field(
        0, ge=0, le=64, description="Threads one transcode may use (0: ffmpeg chooses, usually one per core)."
    )
    media_max_duration_s: float = Field(
        6 * 3600.0, gt=0, description="Longest video accepted for a lecture; longer ones fail at the probe."
    )
    media_playback_token_s: int = Field(
        900,
        ge=30,
        le=7 * 86400,
        description="A signed playback URL of a lecture's video works this long plus the lecture's duration after "
        "it was handed out (then the player asks for the lecture again); its token is bound to the user and video.",
    )

    # --- collaborative editing (collab_ide) ---
    yjs_takeover: bool = Field(
        True,
        description="/yjs websockets take their connection from aiohttp after the handshake, as the Socket.IO "
        "websockets do (about 7 KB per idle connection instead of ~14 KB; frames handled without a task). "
        "false: aiohttp's own websocket, kept for one release to compare. Both use "
        "STUDYHALL_COLLAB_MAX_MESSAGE_BYTES; the takeover also STUDYHALL_WS_MAX_BUFFER and "
        "STUDYHALL_WS_MAX_FRAGMENTS.",
    )
    yjs_engine: Literal["auto", "c", "python"] = Field(
        "auto",
        description="What reads and forwards /yjs messages. c: the compiled engine (collab_ide/_engine.c, built by "
        "scripts/setup) reads, checks and forwards keystrokes on a thread of its own and hands Python the rest in "
        "order: less than half the y-websocket server's CPU per edit (bench/RESULTS.md). python: every message "
        "on the event loop (the takeover connections, or aiohttp's with STUDYHALL_YJS_TAKEOVER=false). auto: c "
        "where it is built and STUDYHALL_YJS_TAKEOVER is not false, else python. Same protocol, limits and close "
        "codes on both; TLS connections (when studyhall terminates TLS itself) stay on the Python path.",
    )
    collab_max_message_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="Largest y-websocket message; larger ones close with 1009.",
    )
    collab_flush_interval_s: float = Field(
        0.05, gt=0, le=10, description="Document updates are appended to the Postgres log in batches this often."
    )
    collab_flush_max_updates: int = Field(500, ge=1, le=100_000, description="...or as soon as this many updates wait.")
    collab_compact_after_updates: int = Field(
        5000, ge=1, description="Fold a document's log into its snapshot after this many logged updates."
    )
    collab_compact_idle_s: float = Field(
        10.0, gt=0, le=3600, description="...or once it has not changed for this long."
    )
    collab_unload_delay_s: float = Field(
        30.0, ge=0, le=86400, description="A document nobody has open is unloaded from memory this much later."
    )
    collab_max_document_bytes: int = Field(
        4 * 1024 * 1024,
        ge=64 * 1024,
        le=256 * 1024 * 1024,
        description="Largest a workspace's document may grow: its Yjs state as stored (files and editing "
        "history), which every editor that joins downloads. An update that would take it past this is refused "
        "whole (not applied, forwarded or stored) and its connection closed with 4413; near the cap an update "
        "may be refused up to 1/16 of it early. Deleting always works.",
    )
    collab_max_file_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        le=256 * 1024 * 1024,
        description="Largest one file of a workspace may grow (UTF-8 bytes). An update that would take a file "
        "past this is refused whole and its connection closed with 4413; so is creating a workspace with such "
        "a file (413).",
    )
    collab_awareness_max_bytes: int = Field(
        16 * 1024,
        ge=256,
        le=1024 * 1024,
        description="Largest awareness message (cursors, user names) a client may send; a larger one is ignored "
        "unread (one over STUDYHALL_COLLAB_MAX_MESSAGE_BYTES closes the connection first). A client's own "
        "state is a few hundred bytes; the official client also echoes everyone else's states back, which the "
        "server ignores anyway.",
    )
    collab_awareness_max_entries: int = Field(
        16,
        ge=1,
        le=10_000,
        description="Most entries an awareness message may carry; one with more is ignored unread (a client "
        "speaks only for itself: one entry).",
    )
    collab_awareness_ids_per_connection: int = Field(
        4,
        ge=1,
        le=64,
        description="Awareness client ids one connection may own. It owns the ids it announces first (a Yjs "
        "client has one), and its entries for ids it does not own are ignored; its states are removed, for "
        "everyone on every node, when it disconnects.",
    )

    collab_held_max_bytes: int = Field(
        64 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="Updates one /yjs connection may hold while they wait for changes the server does not have "
        "(a client that reconnects types before its sync step 2 arrives; one whose edits were refused while "
        "read-only continues from them). Held updates are applied, in order, once what they need comes; past "
        "this the connection is closed with 1008. The CRDT itself never keeps such an update.",
    )
    collab_held_timeout_s: float = Field(
        10.0,
        gt=0,
        le=600,
        description="...and the longest an update may be held: then the connection is closed with 1008 (a "
        "y-websocket client reconnects and syncs).",
    )

    # --- group wars (contests; see leaderboards/ and docs/group-wars.md) ---
    contest_cycle_s: float = Field(
        30.0, ge=0, le=3600, description="Seconds between two passes of the weekly contest cycle (0: no cycle here)."
    )
    contest_push_interval_s: float = Field(
        0.5, gt=0, le=60, description="Least time between two `leaderboard:update` pushes of one contest."
    )
    contest_standings_recheck_s: float = Field(
        300.0,
        ge=1,
        le=86400,
        description="Each node keeps the standings of the contests it pushes in memory and applies only the "
        "submissions changed since its last read. After this many seconds it rebuilds them from every "
        "submission instead, at the next push (a consistency check: a difference is logged). They are also "
        "rebuilt when the contest's rules, problems or taking-part communities change and when its freeze starts.",
    )
    contest_standings_contests: int = Field(
        64,
        ge=1,
        le=10_000,
        description="Contests whose standings one node keeps in memory; the least recently used beyond this "
        "are dropped (and rebuilt from Postgres when next needed).",
    )
    contest_submit_rate_count: int = Field(
        10,
        ge=1,
        le=10_000,
        description="Contest submissions one user may make per STUDYHALL_CONTEST_SUBMIT_RATE_WINDOW_S, over all "
        "contests; then 429. Every submission is stored and held in each node's standings of the contest, so "
        "this bounds what one contestant adds to a contest's cost. Submissions waiting for the judge also count "
        "against STUDYHALL_SANDBOX_PER_USER, together with the user's executions.",
    )
    contest_submit_rate_window_s: float = Field(
        60.0, gt=0, le=86400, description="Window of the per-user contest submission rate limit."
    )
    contest_rejudge_rate_count: int = Field(
        5,
        ge=1,
        le=1000,
        description="Rejudges one contest may have per STUDYHALL_CONTEST_REJUDGE_RATE_WINDOW_S, counting "
        "`POST .../rejudge` and problem edits that change tests or limits (each judges every submission of the "
        "problem again); then 429. A manager fixing a problem needs one or two.",
    )
    contest_rejudge_rate_window_s: float = Field(
        600.0, gt=0, le=86400, description="Window of the per-contest rejudge rate limit."
    )
    quiz_max_questions: int = Field(
        100, ge=1, le=1000, description="Most questions in one quiz; a quiz with more is refused (400)."
    )
    quiz_max_options: int = Field(
        10, ge=2, le=100, description="Most options of one multiple-choice question (at least two are needed)."
    )
    quiz_max_text_chars: int = Field(
        5000,
        ge=100,
        le=100_000,
        description="Longest text of a quiz question's prompt, an option, an accepted short answer, a code "
        "question's starter code, and a learner's short answer (characters).",
    )
    quiz_max_accepted: int = Field(20, ge=1, le=1000, description="Most accepted answers of a short-answer question.")
    quiz_max_code_tests: int = Field(
        20,
        ge=1,
        le=100,
        description="Most test cases of a code question; each answer to it runs once per case in the sandbox.",
    )
    quiz_max_code_chars: int = Field(
        50_000, ge=100, le=512 * 1024, description="Longest answer to a code question (characters of source)."
    )
    quiz_max_attempts_allowed: int = Field(
        50, ge=1, le=10_000, description="Most attempts an instructor may allow a learner at one quiz."
    )
    quiz_save_rate_count: int = Field(
        120,
        ge=1,
        le=100_000,
        description="Times one attempt's answers may be saved per STUDYHALL_QUIZ_SAVE_RATE_WINDOW_S; then 429.",
    )
    quiz_save_rate_window_s: float = Field(
        60.0, gt=0, le=86400, description="Window of the per-attempt answer-saving rate limit."
    )
    quiz_deadline_grace_s: float = Field(
        2.0,
        ge=0,
        le=300,
        description="Answers saved up to this long after an attempt's deadline (time limit or the quiz closing) "
        "are still taken, for the network's delay; later ones are refused (409).",
    )

    # --- search (core_api/search/; see docs/api.md "Search") ---
    search_max_query_chars: int = Field(
        200, ge=10, le=1000, description="Longest search query (characters); a longer one is refused (400)."
    )
    search_max_words: int = Field(
        8, ge=1, le=32, description="Most words in one search query; a query with more is refused (400)."
    )
    search_min_prefix_chars: int = Field(
        3,
        ge=1,
        le=20,
        description='Words at least this long also match as the start of a longer word ("algo" finds '
        '"algorithms"); shorter ones match whole words only, so a one-letter query cannot match half the index.',
    )
    search_max_limit: int = Field(
        50, ge=1, le=200, description="Most results of each kind in one answer (the `limit` query parameter)."
    )
    search_rate_count: int = Field(
        30, ge=1, le=100_000, description="Searches one user may make per STUDYHALL_SEARCH_RATE_WINDOW_S; then 429."
    )
    search_rate_window_s: float = Field(10.0, gt=0, le=86400, description="Window of the per-user search rate limit.")
    search_timeout_ms: int = Field(
        2000,
        ge=50,
        le=60_000,
        description="Longest a search may run in Postgres (statement timeout); past it the search answers 503 "
        "(`unavailable`) and the caller is told to narrow the query.",
    )

    # --- live sessions (live/; see docs/live.md) ---
    live_schedule_room_role: Literal["host", "moderator"] = Field(
        "moderator",
        description="Lowest room role that may schedule, cancel and host live sessions in a room (platform admins "
        "always may; the instructor who owns the session's course may too).",
    )
    live_schedule_rate_count: int = Field(
        20, ge=1, le=10_000, description="Live sessions one user may schedule per rate window; more answer 429."
    )
    live_schedule_rate_window_s: float = Field(
        3600.0, gt=0, le=86400, description="Window of the per-user live-session scheduling rate limit."
    )
    live_max_upcoming_per_room: int = Field(
        50, ge=1, le=10_000, description="Most scheduled (not cancelled, not yet ended) live sessions one room holds."
    )
    live_max_ahead_days: int = Field(366, ge=1, le=3660, description="How far ahead a live session may be scheduled.")
    live_max_duration_minutes: int = Field(
        480, ge=1, le=1440, description="Longest planned duration of a live session."
    )
    live_reminder_lead_s: float = Field(
        600.0,
        ge=0,
        le=7 * 86400,
        description="The `live_session_starting` reminder goes to the room's members and the course's learners "
        "this long before a session starts (once, whichever node sends it).",
    )
    live_reminder_cycle_s: float = Field(
        30.0, ge=0, le=3600, description="Seconds between two passes of the reminder loop (0: no loop on this node)."
    )
    live_max_viewers_per_node: int = Field(
        50,
        ge=1,
        le=100_000,
        description="Subscribers (viewer connections) one node's SFU carries across all its sessions; one more is "
        "refused with `unavailable` rather than degrading everyone's stream (see bench/RESULTS.md).",
    )
    live_max_publishers_per_session: int = Field(
        4,
        ge=1,
        le=100,
        description="People publishing at once in one live session (the host and invited speakers); one more "
        "`live:publish` answers `conflict` until someone stops.",
    )
    live_max_sdp_bytes: int = Field(
        16_384, ge=1024, le=262_144, description="Largest SDP offer accepted by `live:publish` / `live:subscribe`."
    )
    live_signal_rate_count: int = Field(
        20,
        ge=1,
        le=10_000,
        description="`live:publish` / `live:subscribe` negotiations one connection may start per window.",
    )
    live_signal_rate_window_s: float = Field(
        10.0, gt=0, le=3600, description="Window of the per-connection live negotiation rate limit."
    )
    live_keyframe_interval_s: float = Field(
        0.5,
        gt=0,
        le=60,
        description="Least time between two keyframe requests (PLI) the SFU forwards to one publisher, however "
        "many viewers ask.",
    )
    ice_servers: tuple[IceServer, ...] = Field(
        (),
        description='STUN/TURN servers for live sessions, as JSON: `[{"urls": "turn:turn.example.com:3478", '
        '"username": "u", "credential": "p"}]`. The server\'s peers and the clients (told in the '
        "`live:join` answer) use them; empty: host candidates only (same network, or a public address).",
    )
    live_negotiation_timeout_s: float = Field(
        10.0, gt=0, le=120, description="Longest the server spends answering one offer (ICE gathering included)."
    )
    live_owner_ttl_s: float = Field(
        15.0,
        ge=1,
        le=600,
        description="Scaled mode: a live session is owned by one node, named in Redis with this TTL (renewed every "
        "third of it). A node that dies without a word is taken for gone when its Redis subscription drops, or at "
        "the latest once this passes.",
    )
    live_forward_timeout_s: float = Field(
        25.0,
        gt=0,
        le=300,
        description="Scaled mode: longest a node waits for the owner of a live session to answer a `live:*` event "
        "it forwarded (then `unavailable`); keep it above STUDYHALL_LIVE_NEGOTIATION_TIMEOUT_S.",
    )
    live_join_rate_count: int = Field(
        60,
        ge=1,
        le=100_000,
        description="`live:join`s one connection may make per STUDYHALL_LIVE_JOIN_RATE_WINDOW_S (each records "
        "attendance in Postgres); more answer `rate_limited`.",
    )
    live_join_rate_window_s: float = Field(
        60.0, gt=0, le=3600, description="Window of the per-connection `live:join` rate limit."
    )
    live_attendance_max_intervals: int = Field(
        100,
        ge=1,
        le=100_000,
        description="Stretches of presence stored per person per live session; past it a join reopens the "
        "person's latest stretch instead of adding one (the time between counts as present).",
    )

    live_recording_max_s: float = Field(
        14_400.0,
        gt=0,
        le=86_400,
        description="Longest recording of a live session (`live:record`); it stops by itself then and is kept.",
    )
    live_recording_max_bytes: int = Field(
        2 * 1024**3,
        ge=1024 * 1024,
        le=1024**4,
        description="Largest recording file of a live session; it stops by itself past it and is kept.",
    )
    live_record_rate_count: int = Field(
        10,
        ge=1,
        le=10_000,
        description="`live:record` calls (start or stop) one connection may make per "
        "STUDYHALL_LIVE_RECORD_RATE_WINDOW_S; more answer `rate_limited`.",
    )
    live_record_rate_window_s: float = Field(
        60.0, gt=0, le=3600, description="Window of the per-connection `live:record` rate limit."
    )
    turn_secret: SecretStr | None = Field(
        None,
        description="coturn's `static-auth-secret` (its TURN REST API scheme, `use-auth-secret`), at least 16 "
        "characters. When set, every `turn:`/`turns:` entry of STUDYHALL_ICE_SERVERS without a username is handed "
        "out with a time-limited credential: username `<expiry unix time>:<user id>`, credential "
        "base64(HMAC-SHA1(secret, username)).",
    )
    turn_credential_ttl_s: int = Field(
        21_600,
        ge=60,
        le=7 * 86_400,
        description="How long a TURN credential handed out (with STUDYHALL_TURN_SECRET) stays valid; a session's "
        "relays need it for their whole length (coturn checks it on every refresh).",
    )

    @field_validator("database_url", "redis_url", "jwt_secret", "turn_secret", "metrics_token", "metrics_port",
                     "metrics_host", "smtp_url", "mail_dir", mode="before")  # fmt: skip
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("database_url")
    @classmethod
    def _postgres_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("postgres://", "postgresql://")):
            raise ValueError("must start with postgresql:// or postgres://")
        return value

    @field_validator("smtp_url")
    @classmethod
    def _smtp_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("smtp://", "smtps://")):
            raise ValueError("must start with smtp:// or smtps://")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("jwt_secret")
    @classmethod
    def _strong_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters")
        return value

    @field_validator("turn_secret")
    @classmethod
    def _strong_turn_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (anyone who knows it can use the TURN server)")
        return value

    @field_validator("metrics_token")
    @classmethod
    def _long_metrics_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        origins = []
        for item in value.split(","):
            origin = item.strip().rstrip("/")
            if not origin:
                continue
            if not _ORIGIN.fullmatch(origin):
                raise ValueError(f"{item.strip()!r} is not an origin like https://app.example.com (scheme, host, port)")
            origins.append(origin.lower())
        return ",".join(origins)

    @model_validator(mode="after")
    def _scaled_needs_secret(self) -> Settings:
        if self.redis_url is not None and self.jwt_secret is None:
            raise ValueError(
                "STUDYHALL_JWT_SECRET is required when STUDYHALL_REDIS_URL is set: every node must sign "
                "and verify tokens with the same key"
            )
        if self.presence_heartbeat_s >= self.presence_ttl_s:
            raise ValueError(
                "STUDYHALL_PRESENCE_HEARTBEAT_S must be shorter than STUDYHALL_PRESENCE_TTL_S, or live nodes "
                "would be taken for dead between two beats"
            )
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError("set STUDYHALL_S3_ACCESS_KEY_ID and STUDYHALL_S3_SECRET_ACCESS_KEY together")
        if self.s3_bucket is not None and self.media_upload_max_bytes > 10_000 * self.s3_upload_part_bytes:
            raise ValueError(
                "STUDYHALL_MEDIA_UPLOAD_MAX_BYTES needs more than 10,000 parts of STUDYHALL_S3_UPLOAD_PART_BYTES "
                "(S3's limit): raise the part size"
            )
        if self.sandbox_executor == "celery" and self.redis_url is None:
            raise ValueError("STUDYHALL_SANDBOX_EXECUTOR=celery needs STUDYHALL_REDIS_URL (the Celery broker)")
        if self.media_executor == "celery" and self.redis_url is None:
            raise ValueError("STUDYHALL_MEDIA_EXECUTOR=celery needs STUDYHALL_REDIS_URL (the Celery broker)")
        if self.metrics_port is not None and self.metrics_port == self.port:
            raise ValueError("STUDYHALL_METRICS_PORT must differ from STUDYHALL_PORT (it is a listener of its own)")
        if self.db_pool_min > self.db_pool_max:
            raise ValueError("STUDYHALL_DB_POOL_MIN must not exceed STUDYHALL_DB_POOL_MAX")
        if not self.watch_nudge_release_s < self.watch_nudge_threshold_s < self.watch_seek_threshold_s:
            raise ValueError(
                "the watch thresholds must grow: STUDYHALL_WATCH_NUDGE_RELEASE_S < STUDYHALL_WATCH_NUDGE_THRESHOLD_S"
                " < STUDYHALL_WATCH_SEEK_THRESHOLD_S"
            )
        if self.watch_start_lead_s > self.watch_max_start_lead_s:
            raise ValueError("STUDYHALL_WATCH_START_LEAD_S must not exceed STUDYHALL_WATCH_MAX_START_LEAD_S")
        if self.collab_max_file_bytes > self.collab_max_document_bytes:
            raise ValueError("STUDYHALL_COLLAB_MAX_FILE_BYTES must not exceed STUDYHALL_COLLAB_MAX_DOCUMENT_BYTES")
        if self.watch_hard_sync_s > self.watch_seek_threshold_s:
            raise ValueError("STUDYHALL_WATCH_HARD_SYNC_S must not exceed STUDYHALL_WATCH_SEEK_THRESHOLD_S")
        return self

    @property
    def embedded(self) -> bool:
        """True when studyhall runs its own Postgres from the data directory."""
        return self.database_url is None

    @property
    def media_root(self) -> Path:
        """STUDYHALL_MEDIA_DIR, or ``media`` in the data directory."""
        return self.media_dir if self.media_dir is not None else self.data_dir / "media"

    @property
    def sandbox_on_celery(self) -> bool:
        """True when programs run on Celery workers rather than in this process."""
        return self.sandbox_executor == "celery" or (self.sandbox_executor == "auto" and self.redis_url is not None)

    @property
    def media_on_celery(self) -> bool:
        """True when media jobs run on Celery workers (``studyhall worker -Q media``) rather than in this process."""
        return self.media_executor == "celery" or (self.media_executor == "auto" and self.redis_url is not None)

    @property
    def cors_origin_list(self) -> tuple[str, ...]:
        """The origins of STUDYHALL_CORS_ORIGINS, normalised (lower case, no trailing slash)."""
        return tuple(o for o in self.cors_origins.split(",") if o)

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"http://{self.host}:{self.port}"

    def jwt_key(self) -> str:
        """The token signing key: the configured one, or one kept in ``data_dir/jwt_secret``."""
        if self.jwt_secret is not None:
            return self.jwt_secret.get_secret_value()
        path = self.data_dir / "jwt_secret"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            pass
        self.data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key)
        return key

    def masked(self) -> dict[str, Any]:
        """Effective settings for display, secrets shown as ``********``."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = "********"
            elif isinstance(value, Path):
                value = str(value)
            out[ENV_PREFIX + name.upper()] = value
        return out


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings once; raise :class:`ConfigError` naming the bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = [str(p) for p in err["loc"]]
            name = ENV_PREFIX + loc[0].upper() if loc else "settings"
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{name}: {msg}" if loc else msg)
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
    except SettingsError as exc:  # a structured setting (STUDYHALL_ICE_SERVERS) that is not JSON
        field = re.search(r'field "(\w+)"', str(exc))
        name = ENV_PREFIX + field.group(1).upper() if field else "a setting"
        raise ConfigError(f"invalid configuration: {name}: not valid JSON") from None
