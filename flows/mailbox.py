"""A local SMTP server for the demo: receives the alert emails into a folder."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Mailbox:
    folder: Path

    def count(self) -> int:
        return len(list(self.folder.glob("*.eml")))


@contextmanager
def local_mailbox(host: str, port: int, folder: Path) -> Iterator[Mailbox]:
    """Run an aiosmtpd server on ``host:port`` that writes each message to ``folder``."""
    from aiosmtpd.controller import Controller

    folder.mkdir(parents=True, exist_ok=True)

    class _Save:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd API)
            index = len(list(folder.glob("*.eml")))
            (folder / f"{index:04d}.eml").write_bytes(envelope.original_content or envelope.content)
            return "250 Message accepted for delivery"

    controller = Controller(_Save(), hostname=host, port=port)
    controller.start()
    try:
        yield Mailbox(folder)
    finally:
        controller.stop()
