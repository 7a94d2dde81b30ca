"""A local SMTP server for the demo: receives the alert emails into a folder."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Mailbox:
    folder: Path

    def count(self) -> int:
        return len(list(self.folder.glob("*.eml")))


def _cannot_listen(host: str, port: int, err: OSError) -> OSError:
    return OSError(
        err.errno,
        f"the demo's SMTP server cannot listen on {host}:{port} ({err.strerror}): another "
        "demo may be running on this machine; set MMOPS_SMTP__PORT to a free port (and "
        "MMOPS_DATA_DIR to another folder)",
    )


def check_can_listen(host: str, port: int) -> None:
    """Fail now, before any work, when ``host:port`` is taken (another demo holds it).

    Raises:
        OSError: the port cannot be bound, with the address and what to do.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As asyncio's server sets it: connections of an earlier demo left in TIME_WAIT
        # do not hold the port, a server listening on it does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            raise _cannot_listen(host, port, err) from None


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
    try:
        controller.start()
    except OSError as err:
        raise _cannot_listen(host, port, err) from None
    try:
        yield Mailbox(folder)
    finally:
        controller.stop()
