"""
The C{twcomms} command (also C{python -m twcomms}).

    twcomms serve [--port 6000] [hub options]        run a hub in the foreground
    twcomms send HOST:PORT [MESSAGE | --file F | -]  send a message, a file, lines
    twcomms listen HOST:PORT [--count N]             print messages as they arrive

C{serve} takes exactly the options of C{twistd comms} (one definition:
L{twcomms.ops.service.Options}). Exit codes: 0 success; 1 the connection failed
or closed before the work was done (one line on stderr says why); 2 a bad
argument.

Thread: runs the reactor on the main thread; not for import into programs
that already run one.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import stat
import sys
from collections.abc import Sequence
from typing import Any, BinaryIO, TextIO

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python import usage

from twcomms.client import CommsClientFactory
from twcomms.connection import CloseReason, FrameWriter
from twcomms.errors import CommsError, InvalidJSONError, PayloadSourceError
from twcomms.options import (
    ConnectionOptions,
    ExtensionOptions,
    HelloOptions,
    Options,
    add_arguments,
    from_arguments,
)
from twcomms.wire.codecs import get_codec

__all__ = ["main"]

#: Exit codes.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class _Failed(Exception):
    """
    The command could not do its work; the message is the one line to print.
    """


def _address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    if not 0 < int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 1-65535, got {port}")
    return host.strip("[]"), int(port)


def _count(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {value!r}")
    return int(value)


#: The option sections C{send} and C{listen} take as flags. (Not the
#: reconnect section: each command makes one connection and reports how it
#: ended; not the server's or the threaded API's flow control.)
CLIENT_COMMAND_SECTIONS = (ConnectionOptions, ExtensionOptions, HelloOptions)


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """
    The C{twcomms} parser, and its subcommands' parsers by name.
    """
    parser = argparse.ArgumentParser(
        prog="twcomms",
        description=(
            "json, string and binary messages over TCP, wire-compatible with "
            "Python Comms (4-byte length header, then the payload)."
        ),
        epilog=(
            "Exit codes: 0 success, 1 connection failed or closed early, "
            "2 bad arguments."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser(
        "serve",
        help="run a message hub in the foreground (the options of 'twistd comms')",
        add_help=False,
    )

    def connection_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("address", type=_address, metavar="HOST:PORT")
        p.add_argument(
            "--timeout", type=float, default=10.0, help="connect timeout, seconds"
        )
        p.add_argument("--tls", action="store_true", help="connect over TLS")
        p.add_argument(
            "--ca", metavar="PEM", help="CA certificate(s) to trust for --tls"
        )
        p.add_argument("--hostname", help="name the server certificate must carry")
        secret = p.add_mutually_exclusive_group()
        secret.add_argument(
            "--credentials-env",
            metavar="NAME",
            help="with --extensions: authenticate with the credentials in this "
            "environment variable (a message: JSON text in json mode); never "
            "given on the command line, where every user sees it",
        )
        secret.add_argument(
            "--credentials-file",
            metavar="PATH",
            help="the same, read from this file (a trailing newline is dropped)",
        )
        add_arguments(p, CLIENT_COMMAND_SECTIONS)

    send = sub.add_parser(
        "send",
        help="send one message, a file, or stdin lines",
        description=(
            "Send MESSAGE, or the contents of --file as one binary message, or "
            "each line of standard input (MESSAGE '-') as a message."
        ),
    )
    connection_options(send)
    send.add_argument(
        "message", nargs="?", help="the message; '-' reads lines from stdin"
    )
    send.add_argument(
        "--file", "-f", metavar="PATH", help="send this file as one message"
    )

    listen = sub.add_parser(
        "listen",
        help="print each message as it arrives",
        description=(
            "Connect and print every message: JSON pretty-printed, text as is, "
            "binary as its size and a hex preview."
        ),
    )
    connection_options(listen)
    listen.add_argument(
        "--count", "-n", type=_count, metavar="N", help="stop after N messages"
    )
    return parser, {"send": send, "listen": listen}


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the command; return its exit code.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["serve"]:
        return _serve(args_list[1:])
    args = parse_command(args_list)
    if args.command == "send":
        return _run(_send, args)
    return _run(_listen, args)


def parse_command(args_list: list[str]) -> argparse.Namespace:
    """
    Parse a C{send} or C{listen} command line (C{args.options} is its
    L{Options}). Exits with status 2 and a message on a bad one,
    as argparse does.
    """
    parser, commands = _parser()
    sub = commands.get(args_list[0]) if args_list else None
    if sub is not None:
        # Options may come between HOST:PORT and MESSAGE: parse the
        # subcommand's arguments intermixed (argparse cannot do that
        # through subparsers).
        args = sub.parse_intermixed_args(args_list[1:])
        args.command = args_list[0]
    else:
        args = parser.parse_args(args_list)
    try:
        args.options = Options.build(
            door="twcomms send/listen",
            sections=CLIENT_COMMAND_SECTIONS,
            **from_arguments(args, CLIENT_COMMAND_SECTIONS),
        )
    except (TypeError, ValueError) as e:
        (sub or parser).error(str(e))
    args.credentials = _credentials(args, sub or parser)
    if args.command == "send":
        assert sub is not None
        if (args.message is None) == (args.file is None):
            sub.error("send takes a MESSAGE (or '-') or --file, not both or neither")
        if args.message not in (None, "-"):
            data_type = args.options.connection.codec.name
            try:
                get_codec(data_type).encode(_as_message(args.message, data_type))
            except InvalidJSONError as e:
                cause = e.__cause__ or e
                sub.error(
                    f"MESSAGE is not valid JSON ({cause}); write JSON (a text "
                    f"is '\"text\"'), or use --type string"
                )
            except CommsError as e:
                sub.error(str(e))
    return args


# -- serve ---------------------------------------------------------------------


def _serve(argv: list[str]) -> int:
    from twcomms.ops.service import Options, makeService

    options = Options()
    options.synopsis = "Usage: twcomms serve [options]"
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        print(f"twcomms serve: {e}", file=sys.stderr)
        print("Try 'twcomms serve --help'.", file=sys.stderr)
        return EXIT_USAGE
    from twisted.internet import reactor as _reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    reactor: Any = _reactor
    service = makeService(options, reactor)
    try:
        service.startService()
    except Exception as e:
        print(f"twcomms serve: {e}", file=sys.stderr)
        return EXIT_FAILED
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)])
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    return EXIT_OK


# -- send and listen -----------------------------------------------------------


def _run(command: Any, args: argparse.Namespace) -> int:
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor
    outcome: list[int] = []
    interrupted: list[bool] = []
    # Ctrl-C or SIGTERM: the user asked us to stop; that is a normal end.
    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: interrupted.append(True)
    )

    def finish(result: Any) -> None:
        if interrupted:
            return
        if isinstance(result, BaseException) or hasattr(result, "value"):
            error = getattr(result, "value", result)
            message = (
                str(error)
                if isinstance(error, (_Failed, CommsError, OSError))
                else repr(error)
            )
            print(f"twcomms {args.command}: {message}", file=sys.stderr)
            outcome.append(EXIT_FAILED)
        else:
            outcome.append(EXIT_OK)
        reactor.stop()

    def start() -> None:
        d = ensureDeferred(command(reactor, args))
        d.addCallbacks(finish, finish)

    reactor.callWhenRunning(start)
    reactor.run()
    if outcome:
        return outcome[0]
    return EXIT_OK if interrupted else EXIT_FAILED


async def _connect(
    reactor: Any, args: argparse.Namespace, **kw: Any
) -> CommsClientFactory:
    client = CommsClientFactory(
        options=args.options, reactor=reactor, credentials=args.credentials, **kw
    )
    host, port = args.address
    if args.tls:
        client.connectSSL(
            host, port, trust_root=args.ca, hostname=args.hostname, timeout=args.timeout
        )
    else:
        client.connectTCP(host, port, timeout=args.timeout)
    try:
        await client.whenConnected()
    except CommsError as e:
        raise _Failed(str(e)) from None
    return client


async def _send(reactor: Any, args: argparse.Namespace) -> None:
    client = await _connect(reactor, args)
    proto = client.connection
    assert proto is not None and proto.writer is not None
    data_type = args.options.connection.codec.name
    try:
        if args.file is not None:
            with open(args.file, "rb") as f:
                await _send_file(proto.writer, f, sys.stderr)
        elif args.message == "-":
            for line in sys.stdin:
                proto.sendMessage(_as_message(line.rstrip("\r\n"), data_type))
        else:
            proto.sendMessage(_as_message(args.message, data_type))
    except OSError as e:
        raise _Failed(str(e)) from None
    reason = await _close(client)
    if reason not in (CloseReason.CLOSED, None):
        raise _Failed(f"the connection closed before everything was sent ({reason})")


def _credentials(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Any:
    """
    The credentials named by C{--credentials-env} or C{--credentials-file},
    as a message of the connection's type; L{None} if neither was given.
    """
    env = getattr(args, "credentials_env", None)
    path = getattr(args, "credentials_file", None)
    if env is None and path is None:
        return None
    if not args.options.hello.extensions:
        parser.error("--credentials-env/--credentials-file need --extensions yes")
    if env is not None:
        text = os.environ.get(env)
        if text is None:
            parser.error(f"--credentials-env {env}: no such environment variable")
    else:
        assert path is not None
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read().removesuffix("\n")
        except OSError as e:
            parser.error(f"--credentials-file: {e}")
    data_type = args.options.connection.codec.name
    if data_type == "json":
        try:
            return json.loads(text)
        except ValueError:
            parser.error("the credentials are not JSON text (json mode)")
    return _as_message(text, data_type)


def _as_message(text: str, data_type: str) -> Any:
    """
    Command-line text as a message: JSON text in json mode (validated by
    the codec), text in string mode, its UTF-8 bytes in binary mode.
    """
    return text.encode() if data_type == "binary" else text


async def _close(client: CommsClientFactory) -> CloseReason | None:
    proto = client.connection
    disconnected = client.whenDisconnected()
    await client.stop()
    return proto.closeReason if proto is not None else await disconnected


async def _send_file(writer: FrameWriter, f: BinaryIO, err: TextIO) -> None:
    """
    Send the file C{f} as one binary message through the connection's
    writer: a regular file is read and written in 1 MiB slices as the
    socket drains (never held in memory whole), in order with anything
    else sent, within the outbound limit; a progress bar on a terminal.
    """
    st = os.fstat(f.fileno())
    if stat.S_ISREG(st.st_mode):
        size = st.st_size
        read = f.read
    else:
        # A pipe or a device: its size is known only once it is read.
        whole = f.read()
        size = len(whole)
        read = io.BytesIO(whole).read
    if size > writer.maxLength:
        raise _Failed(
            f"{size} bytes is over the maximum message size of "
            f"{writer.maxLength}; raise --max-message-size (the receiver must "
            f"accept it too)"
        )
    show = err.isatty() and size >= 1 << 20

    def progress(done: int, total: int) -> None:
        width = 40
        filled = width * done // total
        err.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] "
            f"{done / (1 << 20):.1f}/{total / (1 << 20):.1f} MiB"
        )
        err.flush()

    try:
        await writer.streamPayload(size, read, progress if show else None)
    except PayloadSourceError as e:
        raise _Failed(f"the file shrank while it was being sent: {e}") from None
    if show:
        err.write("\n")


async def _listen(reactor: Any, args: argparse.Namespace) -> None:
    done: Deferred[None] = Deferred()
    count = [0]
    out = sys.stdout

    def on_message(client: CommsClientFactory, message: Any) -> None:
        out.write(_render(message) + "\n")
        out.flush()
        count[0] += 1
        if args.count is not None and count[0] >= args.count and not done.called:
            done.callback(None)

    def on_close(client: CommsClientFactory, reason: CloseReason) -> None:
        if not done.called:
            if args.count is None and reason is CloseReason.PEER_CLOSED:
                done.callback(None)
            else:
                done.errback(
                    _Failed(
                        f"the connection closed ({reason}) after {count[0]} messages"
                    )
                )

    client = await _connect(reactor, args, on_message=on_message, on_close=on_close)
    if args.count == 0:
        done.callback(None)
    await done
    await client.stop()


def _render(message: Any) -> str:
    if isinstance(message, bytes):
        preview = message[:32].hex(" ")
        more = " ..." if len(message) > 32 else ""
        return f"<{len(message)} bytes> {preview}{more}"
    if isinstance(message, str):
        return message
    return json.dumps(message, indent=2, ensure_ascii=False)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
