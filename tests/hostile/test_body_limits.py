"""The body cap stops reading: a declared or streamed 1 GiB body is refused after ~the cap.

In-process (ASGI) tests count the chunks the app pulls; the socket tests do the same against
a real uvicorn server, where the refusal must also close the connection so the rest of the
upload is not read.
"""

from __future__ import annotations

import asyncio
import select
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import uvicorn

from app.main import create_app
from tests.api.conftest import Served, encode, make_settings, sample_image
from tests.fakes import fake_loader, fake_pair

CAP = 1024 * 1024
CHUNK = 64 * 1024
GIGABYTE = 1024**3


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"max_body_bytes": CAP}


class Source:
    """A 1 GiB body produced lazily, counting what the app pulled from it."""

    def __init__(self) -> None:
        self.pulled = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        for _ in range(GIGABYTE // CHUNK):
            self.pulled += CHUNK
            yield b"\x00" * CHUNK


def assert_refused(response: Any) -> None:
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "payload_too_large"
    assert str(CAP) in response.json()["error"]["message"]
    assert response.headers["connection"] == "close"


@pytest.mark.parametrize("endpoint", ["/segment", "/instances"])
async def test_a_declared_length_over_the_cap_is_refused_before_reading(
    served: Served, endpoint: str
) -> None:
    source = Source()
    headers = {"Content-Type": "image/png", "Content-Length": str(GIGABYTE)}
    response = await served.client.post(endpoint, content=source.chunks(), headers=headers)
    assert_refused(response)
    assert source.pulled == 0


@pytest.mark.parametrize("content_type", ["image/png", "application/json", "multipart/form-data"])
async def test_a_chunked_body_is_refused_once_past_the_cap(
    served: Served, content_type: str
) -> None:
    source = Source()
    response = await served.client.post(
        "/segment", content=source.chunks(), headers={"Content-Type": content_type}
    )
    assert_refused(response)
    assert "content-length" not in response.request.headers  # really sent chunked
    assert CAP < source.pulled <= CAP + CHUNK


# --- a real server -------------------------------------------------------------------------


def fake_app_with_cap() -> Any:
    return create_app(make_settings(max_body_bytes=CAP), loader=fake_loader(*fake_pair()))


@pytest.fixture(scope="module")
def server_port() -> Iterator[int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    config = uvicorn.Config(fake_app_with_cap(), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield port
    server.should_exit = True
    thread.join(timeout=10)


def send_until_answered(sock: socket.socket, chunks: Iterator[bytes]) -> tuple[bytes, int]:
    """Send ``chunks`` until the server answers (or stops reading); the answer and bytes sent."""
    sent = 0
    for chunk in chunks:
        readable, _, _ = select.select([sock], [], [], 0)
        if readable:
            break
        try:
            sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += len(chunk)
    return read_until_closed(sock), sent


def read_until_closed(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    received = b""
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not data:  # the server closed the connection after answering
            return received
        received += data


REQUEST_HEAD = "POST /segment HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"


def test_a_real_server_refuses_a_declared_gigabyte_and_closes(server_port: int) -> None:
    with socket.create_connection(("127.0.0.1", server_port)) as sock:
        sock.sendall(f"{REQUEST_HEAD}Content-Length: {GIGABYTE}\r\n\r\n".encode())
        chunks = (b"\x00" * CHUNK for _ in range(GIGABYTE // CHUNK))
        answer, sent = send_until_answered(sock, chunks)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"connection: close" in answer.lower()
    assert sent < 64 * CAP  # far from the gigabyte: the server stopped reading


def test_a_real_server_refuses_a_chunked_gigabyte_and_closes(server_port: int) -> None:
    def http_chunks() -> Iterator[bytes]:
        for _ in range(GIGABYTE // CHUNK):
            yield f"{CHUNK:x}\r\n".encode() + b"\x00" * CHUNK + b"\r\n"

    with socket.create_connection(("127.0.0.1", server_port)) as sock:
        sock.sendall(f"{REQUEST_HEAD}Transfer-Encoding: chunked\r\n\r\n".encode())
        answer, sent = send_until_answered(sock, http_chunks())
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"payload_too_large" in answer
    assert CAP < sent < 64 * CAP


# --- a body that trickles in --------------------------------------------------------------


@pytest.mark.parametrize("settings_overrides", [{"body_read_timeout_s": 0.5}])
async def test_a_trickled_body_is_cut_off_with_408_while_others_are_answered(
    served: Served,
) -> None:
    async def trickle() -> AsyncIterator[bytes]:
        data = encode(sample_image())
        for k in range(0, len(data), 8):  # 8 bytes every 0.1 s: about 80 bytes a second
            await asyncio.sleep(0.1)
            yield data[k : k + 8]

    slow = asyncio.ensure_future(
        served.client.post("/segment", content=trickle(), headers={"Content-Type": "image/png"})
    )
    await asyncio.sleep(0.1)
    # Meanwhile another request is answered at once, and the trickle holds no decode slot.
    other = await served.client.post(
        "/segment", content=encode(sample_image()), headers={"Content-Type": "image/png"}
    )
    assert other.status_code == 200
    response = await asyncio.wait_for(slow, 10)
    assert response.status_code == 408
    assert response.json()["error"]["code"] == "request_timeout"
    assert "SEGSERVE_BODY_READ_TIMEOUT_S" in response.json()["error"]["message"]
    assert response.headers["connection"] == "close"
    assert served.semantic.batches == [1]  # only the other request reached the model
