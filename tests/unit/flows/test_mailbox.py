"""The demo's local SMTP server: a port another process holds is named in a clear error,
and an earlier demo's closed connections do not count as holding it."""

from __future__ import annotations

import smtplib
import socket
from email.message import EmailMessage

import pytest

from flows.mailbox import check_can_listen, local_mailbox


@pytest.fixture
def held_port():
    """A port a listening server holds, as a second demo finds the first one's."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_held_port_fails_the_check_with_the_address_and_the_way_out(held_port):
    with pytest.raises(OSError, match=f"127.0.0.1:{held_port}.*MMOPS_SMTP__PORT"):
        check_can_listen("127.0.0.1", held_port)


def test_a_held_port_fails_the_mailbox_with_the_same_error(held_port, tmp_path):
    with pytest.raises(OSError, match=f"127.0.0.1:{held_port}.*MMOPS_SMTP__PORT"):
        with local_mailbox("127.0.0.1", held_port, tmp_path):
            pass


def test_a_port_whose_server_closed_connections_first_passes_the_check():
    """An earlier demo's server that closed its connections first leaves them in
    TIME_WAIT on its port for a minute; the next demo must still start (asyncio's server
    binds with SO_REUSEADDR, and so does the check)."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's server
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port), timeout=10)
        accepted, _ = server.accept()
        accepted.close()  # the server's side closes first: TIME_WAIT is on its port
        client.recv(1)
        client.close()
    check_can_listen("127.0.0.1", port)


def test_the_mailbox_receives_and_listens_again_on_the_same_port(tmp_path):
    port = _free_port()
    with local_mailbox("127.0.0.1", port, tmp_path) as box:
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = "a@localhost", "b@localhost", "x"
        message.set_content("drift")
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.send_message(message)
        assert box.count() == 1
    check_can_listen("127.0.0.1", port)
    with local_mailbox("127.0.0.1", port, tmp_path) as box:
        assert box.count() == 1  # the folder is kept; the server listens again
