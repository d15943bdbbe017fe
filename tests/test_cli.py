"""
The server operators run and the twcomms command, end to end, in
subprocesses: C{twistd -n comms}, C{twcomms serve|send|listen},
C{python -m twcomms}, and the README's "run the main job" command.

Plain synchronous tests (no reactor in this process): each server binds
127.0.0.1 on a free port, readiness is a polled TCP connect, and a client is
known to be registered once the server logs its address. Every subprocess is
ended by its pid when its context exits; every wait is bounded (see
L{tests.procs}).
"""

from __future__ import annotations

import io
import re
import shlex
import signal
import socket
import struct
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
from twisted.internet.defer import ensureDeferred
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from harness.procs import child_env
from harness.sockets import (
    free_port,
    local_port,
    raw_connect,
    recv_eof,
    recv_frame,
    recv_json,
    send_json,
)
from harness.wire import frame
from twcomms.client import CommsClientFactory
from twcomms.connection import CommsProtocol
from twcomms.ops.cli import _send_file

from .procs import PYTHON, TWCOMMS, TWISTD, WAIT, Hub, Proc, hub, run

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    """
    A scratch working directory, so twistd leaves no twistd.log or pid
    file in the repository.
    """
    d = tmp_path / "cwd"
    d.mkdir()
    return d


def twistd(port: int, *options: str) -> list[str]:
    return [
        TWISTD,
        "-n",
        "--pidfile=",
        "--logfile",
        "-",
        "comms",
        "--port",
        str(port),
        "--interface",
        "127.0.0.1",
        *options,
    ]


def serve(port: int, *options: str) -> list[str]:
    return [TWCOMMS, "serve", "--port", str(port), "--interface", "127.0.0.1", *options]


@pytest.fixture
def twistd_hub(cwd: Path) -> Iterator[Hub]:
    port = free_port()
    with hub(twistd(port, "--stats-interval", "0"), port, cwd=cwd) as server:
        yield server


def assert_relays(server: Hub) -> None:
    """
    Two raw clients: what A sends, B gets; A does not get its own.
    """
    with raw_connect(server.port) as a, raw_connect(server.port) as b:
        server.wait_client(a)
        server.wait_client(b)
        send_json(a, {"from": "a", "n": [1, 2.5, None, True]})
        assert recv_json(b) == {"from": "a", "n": [1, 2.5, None, True]}
        # A bare JSON string is relayed as that value, payload intact.
        a.sendall(frame(b'"hello"'))
        assert recv_frame(b) == b'"hello"'
        # A's next message is B's: anything relayed back to A would have
        # been queued before it.
        send_json(b, {"from": "b"})
        assert recv_json(a) == {"from": "b"}


# -- 1. twistd comms: broadcast ------------------------------------------------


def test_twistd_broadcast_relays_between_clients(twistd_hub: Hub, cwd: Path) -> None:
    assert_relays(twistd_hub)
    twistd_hub.stop()
    assert list(cwd.iterdir()) == [], "twistd left files in its working directory"


# -- 2. echo and sink ----------------------------------------------------------


def test_twistd_echo_sends_back(cwd: Path) -> None:
    port = free_port()
    with (
        hub(twistd(port, "--mode", "echo"), port, cwd=cwd) as server,
        raw_connect(port) as a,
        raw_connect(port) as b,
    ):
        server.wait_client(a)
        server.wait_client(b)
        send_json(a, {"echo": "me"})
        assert recv_json(a) == {"echo": "me"}
        a.sendall(frame(b'"hello"'))
        assert recv_frame(a) == b'"hello"'
        # Only the sender gets it: B's first message is its own echo.
        send_json(b, {"b": 1})
        assert recv_json(b) == {"b": 1}


def test_twistd_sink_sends_nothing_and_logs_stats(cwd: Path) -> None:
    port = free_port()
    argv = twistd(port, "--mode", "sink", "--stats-interval", "0.2")
    with hub(argv, port, cwd=cwd) as server:
        server.wait_line(r"stats: \d+ clients, in \d+ msg/s")
        with raw_connect(port) as a:
            server.wait_client(a)
            start = len(server.lines)
            for i in range(20):
                send_json(a, {"i": i})
            server.wait_line(r"stats: 1 clients, in [1-9]\d* msg/s", start=start)
            a.settimeout(0.5)
            with pytest.raises(TimeoutError):
                a.recv(1)
        line = server.wait_line(r"stats: .* out (\d+) msg/s", start=start)
        assert line.group(1) == "0"


# -- 3. --app ------------------------------------------------------------------

WELCOME_APP = """\
def install(factory):
    def welcome(client):
        client.send({"welcome": True})

    factory.on_connect.append(welcome)
"""


def test_app_callable_gets_the_factory(tmp_path: Path, cwd: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "welcome_app.py").write_text(WELCOME_APP)
    env = child_env(PYTHONPATH=str(lib))
    port = free_port()
    argv = twistd(port, "--app", "welcome_app:install")
    with (
        hub(argv, port, cwd=cwd, env=env) as server,
        raw_connect(port) as a,
        raw_connect(port) as b,
    ):
        assert recv_json(a) == {"welcome": True}
        assert recv_json(b) == {"welcome": True}
        server.wait_client(a)
        server.wait_client(b)
        # The hub's own behaviour (broadcast) is still there.
        send_json(a, {"hi": "b"})
        assert recv_json(b) == {"hi": "b"}


AUTH_APP = """\
def install(factory):
    def authenticate(credentials, client):
        if credentials == {"user": "ann", "password": "s3cret"}:
            return "ann"
        return None

    factory.access.authenticate = authenticate
"""


def test_extended_send_and_listen_authenticate_with_a_hub_that_requires_it(
    tmp_path: Path, cwd: Path
) -> None:
    """
    C{twcomms serve --require-auth yes} with an C{--app} that checks
    credentials; C{listen} and C{send} authenticate with credentials from
    the environment or a file (never argv); wrong ones fail with exit
    status 1 and a clear message, and the secret is printed nowhere.
    """
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "auth_app.py").write_text(AUTH_APP)
    secret = '{"user": "ann", "password": "s3cret"}'
    env = child_env(PYTHONPATH=str(lib), COMMS_SECRET=secret)
    (tmp_path / "creds.json").write_text(secret + "\n")
    port = free_port()
    argv = serve(port, "--require-auth", "yes", "--app", "auth_app:install")
    address = f"127.0.0.1:{port}"
    ext = ["--extensions", "yes", "--credentials-env", "COMMS_SECRET"]
    with hub(argv, port, cwd=cwd, env=env) as server:
        with Proc(
            [TWCOMMS, "listen", address, "--count", "1", *ext], cwd=cwd, env=env
        ) as listen:
            server.wait_new_client()
            sent = run(
                [
                    TWCOMMS,
                    "send",
                    address,
                    '{"hi": 1}',
                    "--extensions",
                    "yes",
                    "--credentials-file",
                    str(tmp_path / "creds.json"),
                ],
                cwd=cwd,
                env=env,
            )
            assert sent.returncode == 0, sent
            assert listen.wait_exit(WAIT) == 0, listen.describe()
            assert listen.output.strip() == '{\n  "hi": 1\n}'
        refused = run(
            [
                TWCOMMS,
                "send",
                address,
                "1",
                "--extensions",
                "yes",
                "--credentials-env",
                "BAD",
            ],
            cwd=cwd,
            env=child_env(BAD='{"user": "ann", "password": "guess"}'),
        )
        assert refused.returncode == 1, refused
        assert "credentials refused" in refused.stderr
        plain = run([TWCOMMS, "send", address, "1"], cwd=cwd)
        assert plain.returncode == 0  # sent; the hub then closes it unread
        server.wait_line(r"without authenticating")
        server_log = server.output
    for text in (server_log, refused.stdout, refused.stderr, sent.stdout, sent.stderr):
        assert "s3cret" not in text and "guess" not in text


@pytest.mark.parametrize("command", ["twistd", "serve"])
def test_bad_app_fails_clearly(command: str, cwd: Path) -> None:
    port = free_port()
    argv = {"twistd": twistd, "serve": serve}[command](port, "--app", "nosuchmodule:x")
    result = run(argv, cwd=cwd)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "Traceback" not in out
    mentions = [line for line in out.splitlines() if "nosuchmodule" in line]
    assert len(mentions) == 1, out
    assert "--app" in mentions[0]
    assert "No module named 'nosuchmodule'" in mentions[0]


# -- 4. SIGTERM ----------------------------------------------------------------


@pytest.mark.parametrize("command", ["twistd", "serve"])
def test_sigterm_closes_clients_and_exits(command: str, cwd: Path) -> None:
    port = free_port()
    argv = {"twistd": twistd, "serve": serve}[command](port)
    with hub(argv, port, cwd=cwd) as server, raw_connect(port) as a:
        server.wait_client(a)
        server.signal(signal.SIGTERM)
        # A clean close (FIN, not a reset), with nothing sent first.
        assert recv_eof(a, timeout=5) == b""
        rc = server.wait_exit(timeout=5)
        server.wait_line(r"disconnected: server stopping")
        # (twistd would re-raise SIGTERM after a clean shutdown; the
        # plugin makes it exit 0 like 'twcomms serve'.)
        assert rc == 0, server.describe()
        if command == "twistd":
            server.wait_line(r"Server Shut Down\.")
        assert "Traceback" not in server.output


# -- 5. options fail clearly ---------------------------------------------------


def test_twistd_bad_type(cwd: Path) -> None:
    result = run([TWISTD, "comms", "--type", "xml"], cwd=cwd)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "--type must be one of json, string, binary, not 'xml'" in out
    assert "Traceback" not in out
    assert list(cwd.iterdir()) == []


def test_serve_bad_type(cwd: Path) -> None:
    result = run([TWCOMMS, "serve", "--type", "xml"], cwd=cwd)
    assert result.returncode == 2, result
    assert result.stdout == ""
    first = result.stderr.splitlines()[0]
    assert (
        first == "twcomms serve: --type must be one of json, string, binary, not 'xml'"
    )


def test_serve_port_in_use(cwd: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = local_port(taken)
        result = run(serve(port), cwd=cwd)
    assert result.returncode == 1, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("twcomms serve: ")
    assert str(port) in lines[0]
    assert "Traceback" not in result.stderr


def test_twistd_port_in_use(cwd: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = local_port(taken)
        result = run(twistd(port), cwd=cwd)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert f"Couldn't listen on 127.0.0.1:{port}" in out


# -- 6. twcomms send / listen through a twcomms serve hub ----------------------


@pytest.fixture
def serve_hub(request: pytest.FixtureRequest, cwd: Path) -> Iterator[Hub]:
    """
    A C{twcomms serve} hub of the type given by indirect parametrization.
    """
    port = free_port()
    data_type = getattr(request, "param", "json")
    with hub(serve(port, "--type", data_type), port, cwd=cwd) as server:
        yield server


def listener(server: Hub, data_type: str, count: int, cwd: Path) -> Proc:
    address = f"127.0.0.1:{server.port}"
    argv = [TWCOMMS, "listen", address, "--type", data_type, "--count", str(count)]
    return Proc(argv, cwd=cwd)


def send_through(
    server: Hub,
    data_type: str,
    count: int,
    send_args: list[str],
    cwd: Path,
    stdin: str | None = None,
    timeout: float = WAIT,
) -> str:
    """
    Start C{twcomms listen --count N}, wait until the hub has it, run
    C{twcomms send}; return what listen printed.
    """
    with listener(server, data_type, count, cwd) as listen:
        server.wait_new_client()
        address = f"127.0.0.1:{server.port}"
        sent = run(
            [TWCOMMS, "send", address, *send_args, "--type", data_type],
            cwd=cwd,
            input=stdin,
            timeout=timeout,
        )
        assert sent.returncode == 0, sent
        assert sent.stdout == sent.stderr == ""
        assert listen.wait_exit(timeout) == 0, listen.describe()
        return listen.output + "\n"


@pytest.mark.parametrize(
    ("serve_hub", "message", "printed"),
    [
        ("json", '{"a": 1}', '{\n  "a": 1\n}\n'),
        ("json", '"hello"', "hello\n"),
        ("json", '[1, "zwölf", null]', '[\n  1,\n  "zwölf",\n  null\n]\n'),
        ("string", "hello, wörld  {not json}", "hello, wörld  {not json}\n"),
        ("binary", "hello", "<5 bytes> 68 65 6c 6c 6f\n"),
    ],
    indirect=["serve_hub"],
)
def test_send_into_listen(
    serve_hub: Hub, message: str, printed: str, cwd: Path
) -> None:
    data_type = serve_hub.argv[serve_hub.argv.index("--type") + 1]
    assert send_through(serve_hub, data_type, 1, [message], cwd) == printed


@pytest.mark.parametrize("serve_hub", ["string"], indirect=True)
def test_send_stdin_lines(serve_hub: Hub, cwd: Path) -> None:
    out = send_through(
        serve_hub, "string", 3, ["-"], cwd, stdin="one\ntwo words\r\nthree\n"
    )
    assert out == "one\ntwo words\nthree\n"


@pytest.mark.parametrize("serve_hub", ["binary"], indirect=True)
def test_send_large_file(serve_hub: Hub, tmp_path: Path, cwd: Path) -> None:
    size = 50 * 1024 * 1024
    path = tmp_path / "big.bin"
    path.write_bytes(bytes(range(256)) * (size // 256))
    out = send_through(serve_hub, "binary", 1, ["--file", str(path)], cwd, timeout=30)
    preview = " ".join(f"{i:02x}" for i in range(32))
    assert out == f"<{size} bytes> {preview} ...\n"


def test_send_options_before_message(cwd: Path) -> None:
    port = free_port()
    argv = [TWCOMMS, "send", f"127.0.0.1:{port}", "--type", "string", "hello"]
    result = run(argv, cwd=cwd)
    # The message is taken; the (refused) connection is what fails.
    assert result.returncode == 1, result
    assert "refused" in result.stderr


@pytest.mark.parametrize("command", ["send", "listen"])
def test_refused_connection(command: str, cwd: Path) -> None:
    port = free_port()
    args = ['"x"'] if command == "send" else []
    result = run([TWCOMMS, command, f"127.0.0.1:{port}", *args], cwd=cwd)
    assert result.returncode == 1, result
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"twcomms {command}: ")
    assert f"127.0.0.1:{port}" in lines[0]
    assert "refused" in lines[0]


def test_listen_without_count_ends_when_the_hub_stops(cwd: Path) -> None:
    port = free_port()
    listen_argv = [TWCOMMS, "listen", f"127.0.0.1:{port}"]
    with (
        hub(serve(port), port, cwd=cwd) as server,
        Proc(listen_argv, cwd=cwd) as listen,
    ):
        server.wait_new_client()
        with raw_connect(port) as a:
            server.wait_client(a)
            send_json(a, {"n": 1})
            listen.wait_line(r'"n": 1')
        server.signal(signal.SIGTERM)
        assert server.wait_exit() == 0, server.describe()
        assert listen.wait_exit() == 0, listen.describe()
        assert listen.output == '{\n  "n": 1\n}'


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
def test_listen_interrupted_quietly(sig: int, cwd: Path) -> None:
    port = free_port()
    listen_argv = [TWCOMMS, "listen", f"127.0.0.1:{port}"]
    with (
        hub(serve(port), port, cwd=cwd) as server,
        Proc(listen_argv, cwd=cwd) as listen,
    ):
        server.wait_new_client()
        listen.signal(sig)
        rc = listen.wait_exit()
        assert "Traceback" not in listen.output, listen.describe()
        assert rc == 0, listen.describe()


@pytest.mark.parametrize("command", ["serve", "send"])
def test_port_out_of_range_is_a_usage_error(command: str, cwd: Path) -> None:
    if command == "serve":
        argv = serve(70000)
    else:
        argv = [TWCOMMS, "send", "127.0.0.1:70000", "x"]
    result = run(argv, cwd=cwd)
    assert result.returncode == 2, result


@pytest.mark.parametrize("address", ["nocolon", "127.0.0.1:", ":6000", "h:port"])
def test_bad_address(address: str, cwd: Path) -> None:
    result = run([TWCOMMS, "send", address, "x"], cwd=cwd)
    assert result.returncode == 2, result
    assert "expected HOST:PORT" in result.stderr
    assert "Traceback" not in result.stderr


# -- 7. the README's "run the main job" command --------------------------------


def readme_serve_command() -> list[str]:
    """
    The last C{&&} part of the README's first sh block.
    """
    text = README.read_text(encoding="utf-8")
    m = re.search(r"^```sh\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert m, "README.md has no ```sh block"
    command = " ".join(m.group(1).split("\\\n")).strip()
    return shlex.split(command.split("&&")[-1])


def test_readme_main_job(cwd: Path) -> None:
    argv = readme_serve_command()
    assert Path(argv[0]).name.startswith("python"), argv
    assert argv[1:4] == ["-m", "twcomms", "serve"], argv
    assert "--port" in argv, argv
    port = free_port()
    argv[0] = PYTHON
    argv[argv.index("--port") + 1] = str(port)
    argv += ["--interface", "127.0.0.1"]
    with hub(argv, port, cwd=cwd) as server:
        assert_relays(server)


# -- 8. help -------------------------------------------------------------------


def test_python_m_twcomms_help(cwd: Path) -> None:
    result = run([PYTHON, "-m", "twcomms", "--help"], cwd=cwd)
    assert result.returncode == 0, result
    for word in ("serve", "send", "listen", "Exit codes"):
        assert word in result.stdout


def test_serve_help(cwd: Path) -> None:
    result = run([TWCOMMS, "serve", "--help"], cwd=cwd)
    assert result.returncode == 0, result
    for option in ("--port", "--interface", "--type", "--mode", "--app", "--listen"):
        assert option in result.stdout
    # (Help text is wrapped to the longest flag's width.)
    assert "broadcast, echo, sink" in " ".join(result.stdout.split())


@pytest.mark.parametrize("command", ["send", "listen"])
def test_send_listen_help(command: str, cwd: Path) -> None:
    result = run([TWCOMMS, command, "--help"], cwd=cwd)
    assert result.returncode == 0, result
    assert "HOST:PORT" in result.stdout
    assert "--type" in result.stdout


def test_send_refuses_invalid_json_before_connecting(cwd: Path) -> None:
    port = free_port()  # nothing listens: the message is refused first
    result = run([TWCOMMS, "send", f"127.0.0.1:{port}", "not json"], cwd=cwd)
    assert result.returncode == 2, result
    assert "not valid JSON" in result.stderr and "--type string" in result.stderr
    assert "Traceback" not in result.stderr


# -- sending a file, in process (no sockets) -----------------------------------


class _CountingTransport(StringTransport):
    """
    Counts what is written and keeps only the first bytes (the header).
    """

    def __init__(self) -> None:
        super().__init__()
        self.written = 0
        self.head = b""

    def write(self, data: bytes) -> None:
        if not self.head:
            self.head = data
        self.written += len(data)


def _file_sender(transport: StringTransport) -> CommsProtocol:
    proto = CommsClientFactory("binary", max_message_size=1 << 30).buildProtocol(None)
    proto.makeConnection(transport)
    return proto


def test_send_file_streams_a_regular_file(tmp_path: Path) -> None:
    size = 32 * 1024 * 1024
    path = tmp_path / "big.bin"
    with open(path, "wb") as f:
        f.truncate(size)  # sparse: no memory to write it
    t = _CountingTransport()
    proto = _file_sender(t)
    tracemalloc.start()
    try:
        with open(path, "rb") as f:
            done = ensureDeferred(_send_file(proto.writer, f, io.StringIO()))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert done.called and done.result is None
    assert t.head == struct.pack("<I", size)
    assert t.written == 4 + size
    assert proto.messagesSent == 1
    assert peak < 4 * 1024 * 1024, peak  # 1 MiB slices, not the whole file


def test_send_file_that_shrinks_aborts_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "shrinks.bin"
    path.write_bytes(b"x" * (3 * 1024 * 1024))

    class Shrinking(io.RawIOBase):
        # fstat says 3 MiB; reading stops after 1 MiB (truncated meanwhile).
        def __init__(self, real: BinaryIO) -> None:
            self.real = real
            self.left = 1024 * 1024

        def fileno(self) -> int:
            return self.real.fileno()

        def read(self, n: int = -1) -> bytes:
            n = min(n, self.left)
            self.left -= n
            return b"x" * n

    t = _CountingTransport()
    proto = _file_sender(t)
    with open(path, "rb") as real:
        done = ensureDeferred(
            _send_file(proto.writer, Shrinking(real), io.StringIO())  # type: ignore[arg-type]
        )
    failures: list[Failure] = []
    done.addErrback(failures.append)
    assert failures and "shrank" in str(failures[0].value)
    assert "1048576 of 3145728" in str(failures[0].value)
    assert t.disconnecting  # aborted: the receiver drops the partial message
    assert t.written == 4 + 1024 * 1024
