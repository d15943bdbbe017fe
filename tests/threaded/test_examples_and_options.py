"""
The original's chat example run as scripts, and threaded options not
covered elsewhere: adopting a connected socket, TLS, endpoint descriptions.
Blocking tests: see the root conftest.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest

from harness.procs import end_process
from harness.sockets import free_port
from tests.tls_helpers import make_tls_files
from twcomms import Client, Server

WAIT = 20
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def wait_for_line(proc: subprocess.Popen[str], prefix: str) -> str:
    """
    Read the process's stdout until a line starting with C{prefix}.
    """
    assert proc.stdout is not None
    result: list[str] = []

    def read() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            if line.startswith(prefix):
                result.append(line)
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(WAIT)
    assert result, f"no line starting {prefix!r}"
    return result[0]


def test_the_original_chat_example(tmp_path: Path) -> None:
    """
    Example_Server.py and Example_Clients.py, the original's scripts with
    one import changed: client 1 asks for lines (input() inside a callback),
    the server broadcasts them, client 2 prints them; "quit" ends both
    clients, and Enter ends the server.
    """
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "Example_Server.py"), str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    clients = None
    try:
        wait_for_line(server, "listening on")
        clients = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "Example_Clients.py"), str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
        out, err = clients.communicate("hello there\nquit\n", timeout=WAIT)
        assert clients.returncode == 0, err
        assert "CL2: hello there" in out
        assert "CL2: quit" in out
        assert out.count(f"Connection to 127.0.0.1:{port} closed") == 2
        assert "Traceback" not in err
        server_out, _ = server.communicate("\n", timeout=WAIT)
        assert server.returncode == 0
        assert "<server broadcast message: 'hello there'>" in server_out
        assert server_out.count("Connected") == 2
        assert server_out.count("Disconnected") == 2
    finally:
        for proc in (clients, server):
            if proc is not None:
                end_process(proc)


def test_adopting_a_connected_socket() -> None:
    got: list[Any] = []
    done = threading.Event()
    server = Server("127.0.0.1", 0)
    server.add_onmessage_callback(lambda m: (got.append(m), done.set()))
    server.start()
    try:
        sock = socket.create_connection(("127.0.0.1", server.port))
        client = Client("127.0.0.1", server.port, True, sock)
        client.connect()
        try:
            client.send({"adopted": True})
            assert done.wait(WAIT)
            assert got == [{"adopted": True}]
        finally:
            client.close()
    finally:
        server.stop()


def test_controlled_by_server_needs_a_connection() -> None:
    with pytest.raises(ValueError, match="connection"):
        Client("127.0.0.1", 1, controlledByServer=True)


@pytest.mark.filterwarnings(
    "ignore:Passing pyOpenSSL (X509|PKey) objects is deprecated:DeprecationWarning"
)
def test_tls_server_and_client(tmp_path: Path) -> None:
    tls = make_tls_files(str(tmp_path))
    port = free_port()
    server = Server("127.0.0.1", port, listen=tls.ssl_description(port))
    server.add_onmessage_callback(lambda c, m: c.send({"tls": m}), with_sender=True)
    server.start()
    try:
        replies: list[Any] = []
        got = threading.Event()
        client = Client(
            "127.0.0.1", port, tls=True, trust_root=tls.ca_pem, tls_hostname="localhost"
        )
        client.add_onmessage_callback(lambda m: (replies.append(m), got.set()))
        client.connect()
        try:
            client.send([1, 2])
            assert got.wait(WAIT)
            assert replies == [{"tls": [1, 2]}]
        finally:
            client.close()
        untrusting = Client("127.0.0.1", port, tls=True, tls_hostname="localhost")
        with pytest.raises(ConnectionError, match="certificate verify failed"):
            untrusting.connect()
    finally:
        server.stop()


def test_listen_on_a_unix_socket() -> None:
    directory = tempfile.mkdtemp(dir="/tmp", prefix="twc")  # short: AF_UNIX limit
    path = os.path.join(directory, "c.sock")
    server = Server("", 0, listen=f"unix:{path}")
    got: list[Any] = []
    done = threading.Event()
    server.add_onmessage_callback(lambda m: (got.append(m), done.set()))
    server.start()
    try:
        with Client("", 0, unix_socket=path) as client:
            client.send("[1]")
            assert done.wait(WAIT)
        assert got == [[1]]
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_request_reply_example() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "request_reply.py")],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert result.returncode == 0, result.stderr
    assert "sum([1, 2, 3]) = 6" in result.stdout
    assert "= 4950" in result.stdout


def test_extensions_example() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "extensions.py")],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "authenticated as ann",
        "sum: {'sum': 6, 'for': 'ann'}",
        "client says: {'status': 'ok'}",
        "joined lab: True",
        "room message: {'to': 'the lab'}",
        "refused: RoomRefused",
    ]


def test_file_transfer_example(tmp_path: Path) -> None:
    source = tmp_path / "payload.bin"
    source.write_bytes(os.urandom(3 * (1 << 20) + 123))
    destination = tmp_path / "received"
    destination.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "file_transfer.py"),
            str(source),
            str(destination),
        ],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert result.returncode == 0, result.stderr
    assert "sha256 matches" in result.stdout
    assert (destination / "payload.bin").read_bytes() == source.read_bytes()
