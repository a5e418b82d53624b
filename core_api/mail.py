"""Email: through SMTP when ``STUDYHALL_SMTP_URL`` is set, otherwise written to a directory (development).

``smtp://user:password@host:587`` sends with STARTTLS when the server offers it; ``smtps://host:465`` uses TLS
from the start (aiosmtplib). Without an SMTP URL every message is written as an ``.eml`` file to
``STUDYHALL_MAIL_DIR`` (default ``<data dir>/mail``), which a developer opens with any mail client: nothing
leaves the machine.

Messages are sent in the background (:meth:`Mailer.send_later`): a request never waits for a mail server,
and its answer takes the same time whether or not a message was sent (password resets must not tell who
has an account). A message that cannot be sent is logged with its recipient's domain only.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from urllib.parse import unquote, urlsplit

from aiohttp import web

from core_api.settings import Settings

log = logging.getLogger(__name__)


class Mailer:
    def __init__(self, settings: Settings) -> None:
        self.sender = settings.mail_from
        self.smtp = urlsplit(settings.smtp_url.get_secret_value()) if settings.smtp_url is not None else None
        self.directory = settings.mail_dir or settings.data_dir / "mail"
        self.timeout_s = settings.smtp_timeout_s
        self._tasks: set[asyncio.Task[None]] = set()

    def message(self, to: str, subject: str, text: str) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = to
        msg["Subject"] = subject
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = make_msgid(domain="studyhall")
        msg.set_content(text)
        return msg

    async def send(self, to: str, subject: str, text: str) -> None:
        msg = self.message(to, subject, text)
        if self.smtp is None:
            await asyncio.to_thread(self._write, msg)
            return
        import aiosmtplib

        url = self.smtp
        await aiosmtplib.send(
            msg,
            hostname=url.hostname or "127.0.0.1",
            port=url.port or (465 if url.scheme == "smtps" else 587),
            username=unquote(url.username) if url.username else None,
            password=unquote(url.password) if url.password else None,
            use_tls=url.scheme == "smtps",
            start_tls=None if url.scheme == "smtp" else False,  # None: STARTTLS if the server offers it
            timeout=self.timeout_s,
        )

    def _write(self, msg: EmailMessage) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.directory / f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.eml"
        path.write_bytes(bytes(msg))
        path.chmod(0o600)

    def send_later(self, to: str, subject: str, text: str) -> None:
        """Send in the background; failures are logged, never raised to the request."""

        async def run() -> None:
            try:
                await self.send(to, subject, text)
            except Exception as exc:
                log.warning("could not send mail to a @%s address: %s", to.rpartition("@")[2], exc)

        task = asyncio.ensure_future(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, wait_s: float = 5.0) -> None:
        """Let the messages still being sent finish (shutdown), at most ``wait_s``."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=wait_s)

    def outbox(self) -> list[Path]:
        """The messages written so far in development mode, oldest first."""
        return sorted(self.directory.glob("*.eml")) if self.directory.exists() else []


MAILER = web.AppKey("mailer", Mailer)
