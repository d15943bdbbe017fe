"""
Negotiating the extended protocol at the start of a connection
(C{docs/protocol.md}, "Extensions"): L{ServerHello} reads a client's first
frame, L{ClientHello} opens with a hello and waits for the answer. A
connection that does neither is plain: the original's frames, for life.

Thread: the reactor thread only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from twcomms.connection.interfaces import CloseReason
from twcomms.connection.timers import Timeout
from twcomms.errors import (
    AuthenticationError,
    ExtensionsRefusedError,
    NotConnectedError,
)
from twcomms.options import ExtensionOptions
from twcomms.wire.extended import (
    VERSION,
    Hello,
    HelloError,
    Kind,
    encode_hello,
    new_nonce,
    parse_hello,
)

if TYPE_CHECKING:
    from twcomms.connection.protocol import CommsProtocol

__all__ = ["ClientHello", "Negotiation", "ServerHello"]

_log = Logger()

#: What a server grants for a hello: the features and their parameters.
Grant = Callable[[Hello], dict[str, dict[str, Any]]]


class Negotiation:
    """
    How a connection starts: L{begin} is called once the transport is
    ready (after TLS's handshake); it calls C{protocol.startReceiving()}
    when the receiver may have the connection. While
    C{protocol.negotiating} is set, the connection's frames go to
    L{frameReceived} rather than to the receiver; it is set to L{None} when
    the connection is plain or extended.

    @ivar options: the extended protocol's options, should it be agreed.
    """

    def __init__(self, options: ExtensionOptions) -> None:
        self.options = options

    def begin(self, protocol: CommsProtocol) -> None:
        raise NotImplementedError

    def frameReceived(self, protocol: CommsProtocol, payload: bytes) -> None:
        raise NotImplementedError

    def connectionLost(self) -> None:
        """
        The connection ended; stop any timer.
        """


class ServerHello(Negotiation):
    """
    The server side: the connection is the receiver's at once (a plain
    client may only listen); its first frame, if a valid hello, is
    answered with what C{grant} allows, and the connection is extended from
    the answer on. Any other first frame is a message, and the connection
    is plain for life.

    One serves every connection of a server (it keeps no state of its own:
    a connection costs no more for it).
    """

    def __init__(self, grant: Grant, options: ExtensionOptions) -> None:
        super().__init__(options)
        self._grant = grant

    def begin(self, protocol: CommsProtocol) -> None:
        protocol.startReceiving()

    def frameReceived(self, proto: CommsProtocol, payload: bytes) -> None:
        if proto.closing:
            # Refused already (max_clients, stopping): nothing to answer.
            proto.negotiation = None
            return
        try:
            hello = parse_hello(payload)
        except HelloError as e:
            _log.info(
                "connection from {peer}: its first message starts like a hello "
                "but is not one ({error}); the connection is plain",
                peer=proto.peer,
                error=e,
            )
            hello = None
        if hello is None:
            proto.negotiation = None
            proto.stringReceived(payload)  # a message: the connection is plain
            return
        granted = self._grant(hello)
        version = min(VERSION, hello.version)
        answer = encode_hello(hello.nonce, granted, answer=True, version=version)
        proto.extend(granted, answer=answer)
        proto.negotiation = None
        declined = sorted(set(hello.features) - set(granted))
        _log.info(
            "connection from {peer} is extended (version {version}): agreed "
            "{agreed}{declined}",
            peer=proto.peer,
            version=version,
            agreed=", ".join(sorted(granted)) or "nothing",
            declined=f"; declined {', '.join(declined)}" if declined else "",
        )


class ClientHello(Negotiation):
    """
    The client side: send a hello, read plain frames (held back, in order)
    until the answer that echoes our nonce, authenticate if credentials are
    given, then give the receiver the connection and the held messages.

    Why it failed, if it does, is set as the protocol's C{negotiationError}.
    """

    def __init__(
        self,
        features: dict[str, dict[str, Any]],
        timeout: float,
        credentials: bytes | None,
        options: ExtensionOptions,
    ) -> None:
        super().__init__(options)
        self._features = features
        self._timeout = timeout
        self._credentials = credentials
        self._held: list[bytes] = []
        self._heldBytes = 0
        self._timer: Timeout | None = None
        self._answered = False

    def begin(self, protocol: CommsProtocol) -> None:
        self._protocol = protocol
        self._nonce = new_nonce()
        self._timer = Timeout(self._timeout, self._noAnswer, protocol.clock)
        self._timer.start()
        protocol.writeHello(encode_hello(self._nonce, self._features))

    def frameReceived(self, protocol: CommsProtocol, payload: bytes) -> None:
        if not self._answered:
            try:
                answer = parse_hello(payload, answer=True)
            except HelloError:
                answer = None
            if answer is not None and answer.nonce == self._nonce:
                self._answered = True
                self._agreed(answer)
                return
        self._hold(payload)

    def _hold(self, payload: bytes) -> None:
        proto = self._protocol
        self._held.append(payload)
        self._heldBytes += len(payload)
        if self._heldBytes <= proto.MAX_LENGTH:
            return
        if self._answered:
            # Authenticating, while a server that does not require it
            # broadcasts: more than a message's worth is more than we hold
            # for an application that does not have the connection yet.
            proto.negotiationError = NotConnectedError(
                f"{proto.peer} sent {self._heldBytes} bytes of messages while "
                f"we authenticated (over max_message_size); closing"
            )
            proto.abort(CloseReason.ERROR)
            return
        # A server that answers at all answers within a message or two.
        proto.negotiationError = ExtensionsRefusedError(
            f"{proto.peer} sent {self._heldBytes} bytes of messages and no "
            f"answer to our hello; it does not speak twcomms extensions"
        )
        proto.abort(CloseReason.EXTENSION_TIMEOUT)

    def _noAnswer(self) -> None:
        proto = self._protocol
        self._protocol.negotiationError = ExtensionsRefusedError(
            f"{proto.peer} did not answer our hello within {self._timeout} "
            f"seconds: it does not speak twcomms extensions (an original "
            f"Python Comms server, or extensions turned off). Connect with "
            f"extensions='prefer' to fall back to the plain protocol."
        )
        _log.warn("{error}", error=proto.negotiationError)
        proto.abort(CloseReason.EXTENSION_TIMEOUT)

    def _agreed(self, answer: Hello) -> None:
        proto = self._protocol
        if self._timer is not None:
            self._timer.stop()  # authenticating has its own timeout
        proto.extend(answer.features)
        _log.info(
            "connected to {peer} with extensions (version {version}): {agreed}",
            peer=proto.peer,
            version=answer.version,
            agreed=", ".join(sorted(answer.features)) or "nothing",
        )
        if self._credentials is None:
            if answer.features.get("auth", {}).get("required"):
                self._refused(
                    AuthenticationError(
                        "CredentialsRequired",
                        f"{proto.peer} requires authentication: connect with "
                        f"credentials",
                    )
                )
                return
            self._start()
            return
        if "auth" not in answer.features:
            self._refused(
                AuthenticationError(
                    "NotNegotiated",
                    f"{proto.peer} does not take credentials (auth not agreed)",
                )
            )
            return
        assert proto.channel is not None
        d = proto.channel.ask(Kind.AUTH, self._credentials, self._timeout)
        d.addCallbacks(self._authenticated, lambda f: self._refused(f.value))

    def _authenticated(self, identity: bytes) -> None:
        proto = self._protocol
        proto.identity = identity.decode("utf-8", "replace")
        _log.info(
            "authenticated to {peer} as {identity}",
            peer=proto.peer,
            identity=proto.identity,
        )
        self._start()

    def _refused(self, error: Exception) -> None:
        proto = self._protocol
        self._protocol.negotiationError = error
        _log.warn(
            "authentication with {peer} failed: {error}", peer=proto.peer, error=error
        )
        proto.close(CloseReason.AUTH_FAILED)

    def _start(self) -> None:
        proto = self._protocol
        proto.negotiation = None
        held, self._held = self._held, []
        proto.startReceiving()
        proto.replay(held)

    def connectionLost(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        proto = self._protocol
        if not self._answered and proto.negotiationError is None:
            # An original Python Comms server in json or string mode closes
            # the connection on a frame that is not text (the hello); so
            # does a full twcomms server (max_clients), before reading it.
            error = ExtensionsRefusedError(
                f"{proto.peer} closed the connection before answering our "
                f"hello: it does not speak twcomms extensions (an original "
                f"Python Comms server closes on a hello), or it is full"
            )
            error.closed = True
            proto.negotiationError = error
