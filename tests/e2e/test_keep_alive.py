"""End to end: the real server keeps a connection open for every client that asks, HTTP/1.0 ones (`ab -k`) too."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.support.server import ServerStarter, free_port, service_environment

pytestmark = pytest.mark.e2e


def read_response(connection: socket.socket) -> tuple[bytes, bytes]:
    """The head and the body of one Content-Length response."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = connection.recv(65536)
        assert chunk, f"the server closed the connection after {received!r}"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += connection.recv(65536)
    return head.lower(), body


@pytest.mark.parametrize(
    ("request_line", "connection_header", "kept_open"),
    [
        ("GET /health HTTP/1.0", "Connection: keep-alive\r\n", True),
        ("GET /health HTTP/1.1", "", True),
        ("GET /health HTTP/1.0", "", False),
        ("GET /health HTTP/1.1", "Connection: close\r\n", False),
    ],
)
def test_a_connection_stays_open_when_the_client_asks(
    start_server: ServerStarter,
    database_url: str,
    tmp_path: Path,
    request_line: str,
    connection_header: str,
    kept_open: bool,
) -> None:
    server = start_server(
        service_environment(
            PORT=str(free_port()),
            DATABASE_URL=database_url,
            DATA_DIR=str(tmp_path / "data"),
            LOG_FILE=str(tmp_path / "app.log"),
        )
    )
    server.wait_until_healthy()
    request = f"{request_line}\r\nHost: 127.0.0.1\r\n{connection_header}\r\n".encode()
    with socket.create_connection(("127.0.0.1", int(server.base_url.rsplit(":", 1)[1])), timeout=10) as connection:
        for _ in range(3 if kept_open else 1):
            connection.sendall(request)
            head, body = read_response(connection)
            assert head.startswith(b"http/1.1 200"), head
            assert b'"status"' in body
        if kept_open:
            assert b"connection: close" not in head
            if request_line.endswith("1.0"):
                assert b"connection: keep-alive" in head  # an HTTP/1.0 client needs to be told
        else:
            assert connection.recv(1) == b""  # closed after its one response
