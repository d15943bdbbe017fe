"""
The Twisted API, client side: a reconnecting client factory.

    from twisted.internet import reactor
    from twcomms.client import CommsClientFactory

    def on_message(client, message):
        print("got", message)

    client = CommsClientFactory("json", autoReconnect=True, on_message=on_message)
    client.connectTCP("127.0.0.1", 6000)
    client.whenConnected().addCallback(lambda _: client.send({"hello": 1}))
    reactor.run()

L{CommsClientFactory} is a L{ReconnectingClientFactory} with its pitfalls
handled: the configured initial delay is really used, the delay is reset
once a connection has stayed up for L{STABLE_AFTER} seconds (a server that
accepts and closes at once, as a full one does, is retried with a growing
delay, not hammered), jitter never pushes a delay past
C{max_delay}, C{max_retries} is honoured, and L{CommsClientFactory.stop}
stops retrying I{and} closes an established connection.

Like every C{ReconnectingClientFactory}, it reconnects only through
connectors (L{connectTCP}, L{connectSSL}, L{connectUNIX}); a Twisted program
that connects through an endpoint uses Twisted's C{ClientService} with
L{CommsClientFactory.forEndpoint} instead (see
C{examples/twisted_client_service.py}).

Thread: the reactor thread only. Nothing here blocks or starts a thread.

(Over 500 lines: one class, C{ReconnectingClientFactory}'s overrides with
the connection state and Deferreds they share, and the extended protocol's
entry points (C{request}, C{join}, C{leave}, the fallback of
C{extensions="prefer"}); its receiver and endpoint factory are in
L{twcomms.client.receiver}, TLS in L{twcomms.client.tls}, the hello in
L{twcomms.client.extended}.)
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IConnector, IDelayedCall
from twisted.internet.protocol import ReconnectingClientFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

from twcomms.client.extended import ask_room, client_hello
from twcomms.client.receiver import ClientConnection, EndpointFactory
from twcomms.client.tls import client_tls_options
from twcomms.connection import CloseReason, CommsProtocol
from twcomms.connection.events import call_each, callback_list
from twcomms.connection.timers import cancel_call, default_reactor
from twcomms.errors import (
    AuthenticationError,
    DecodeError,
    ExtensionsRefusedError,
    GaveUpError,
    NotConnectedError,
)
from twcomms.options import (
    ConnectionOptions,
    ExtensionOptions,
    HelloOptions,
    Options,
    ReconnectOptions,
)
from twcomms.options.readback import ConnectionReadback
from twcomms.wire.codecs import Codec

__all__ = ["CLIENT_SECTIONS", "STABLE_AFTER", "CommsClientFactory"]

#: The option sections a client uses.
CLIENT_SECTIONS = (ConnectionOptions, ReconnectOptions, ExtensionOptions, HelloOptions)

_log = Logger()

# Jitter for every factory not given its own rng (seeding one per factory
# showed in profiles of many clients); used on the reactor thread only.
_JITTER_RNG = random.Random()

ClientCallback = Callable[["CommsClientFactory"], object]
ClientCloseCallback = Callable[["CommsClientFactory", CloseReason], object]
ClientMessageCallback = Callable[["CommsClientFactory", Any], object]
ClientDecodeErrorCallback = Callable[["CommsClientFactory", DecodeError], object]
ClientRequestHandler = Callable[["CommsClientFactory", Any], Any]


#: Seconds a connection must stay up before the reconnect delay and the
#: retry count reset.
STABLE_AFTER = 1.0


class CommsClientFactory(ConnectionReadback, ReconnectingClientFactory):
    """
    Connects to a twcomms (or original Python Comms) server and, with
    C{autoReconnect}, reconnects with exponential back-off.

    Thread: the reactor thread only.

    @ivar connection: the connected L{CommsProtocol}, or L{None}.
    @ivar on_connect: callables C{f(client)}, called on each (re)connection.
    @ivar on_close: callables C{f(client, reason)}, called when a
        connection closes.
    @ivar on_message: callables C{f(client, message)}, called per message.
    @ivar on_decode_error: callables C{f(client, error)}, per frame that did
        not decode.
    @ivar on_request: callables C{f(client, message)} answering the server's
        requests on an extended connection: the first to return something
        other than L{None} (or a Deferred firing with it) is the reply.
    @ivar plain_only: with C{extensions="prefer"}, set once a server did
        not answer the hello: later connections are plain.
    @ivar address: what was connected to: C{(host, port)} or a UNIX path.
    @ivar scheduled_delays: the reconnection delays scheduled so far, in
        seconds (for logs and tests).
    """

    # Connections are logged by twcomms itself, with the peer's address.
    noisy = False

    connection: CommsProtocol | None = None
    # Resets the delay once the connection has lasted STABLE_AFTER seconds.
    _stableCall: IDelayedCall | None = None
    address: tuple[str, int] | str | None = None

    def __init__(
        self,
        messageDataType: str | Codec | None = None,
        byteOrder: str | None = None,
        *,
        options: Options | None = None,
        reactor: Any = None,
        rng: random.Random | None = None,
        on_connect: Iterable[ClientCallback] | ClientCallback = (),
        on_close: Iterable[ClientCloseCallback] | ClientCloseCallback = (),
        on_message: Iterable[ClientMessageCallback] | ClientMessageCallback = (),
        on_decode_error: Iterable[ClientDecodeErrorCallback]
        | ClientDecodeErrorCallback = (),
        on_request: Iterable[ClientRequestHandler] | ClientRequestHandler = (),
        credentials: Any = None,
        **keywords: Any,
    ) -> None:
        """
        @param messageDataType: C{"json"} (default), C{"string"},
            C{"binary"}, or a L{Codec}.
        @param byteOrder: C{"little"} (default) or C{"big"}.
        @param options: an L{Options} to start from (default: defaults).
        @param keywords: any option of L{ConnectionOptions} or
            L{ReconnectOptions} (C{autoReconnect}, C{initial_delay},
            C{max_delay}, C{factor}, C{jitter}, C{max_retries},
            C{max_message_size}, C{idle_timeout}, ...), or a whole section
            (C{connection=}, C{reconnect=}); see C{docs/options.md}. Off by
            default, as in the original: C{autoReconnect}.
        @param reactor: the reactor to connect with and the clock for
            delays; default the global reactor.
        @param rng: the random generator for jitter (seed one in tests).
        @param on_request: a callable or callables for L{on_request}.
        @param credentials: with C{extensions}, sent (encoded as a message)
            to authenticate once the server has answered the hello; the
            connection counts as made once they are accepted. Never logged.
        @raise TypeError: an unknown option.
        @raise ValueError: an option out of range.
        """
        if messageDataType is not None:
            keywords["messageDataType"] = messageDataType
        if byteOrder is not None:
            keywords["byteOrder"] = byteOrder
        self.options = Options.build(
            options, door="CommsClientFactory", sections=CLIENT_SECTIONS, **keywords
        )
        reconnect = self.options.reconnect
        self.initialDelay = self.delay = reconnect.initial_delay
        self.maxDelay = reconnect.max_delay  # type: ignore[assignment]
        self.factor = reconnect.factor
        self.jitter = reconnect.jitter
        self.maxRetries = reconnect.max_retries  # type: ignore[assignment]
        self.autoReconnect = reconnect.autoReconnect
        self.continueTrying = 1 if self.autoReconnect else 0
        self._reactor = reactor
        if reactor is not None:
            self.clock = reactor
        self._rng = rng if rng is not None else _JITTER_RNG
        self.on_connect: list[ClientCallback] = callback_list(on_connect)
        self.on_close: list[ClientCloseCallback] = callback_list(on_close)
        self.on_message: list[ClientMessageCallback] = callback_list(on_message)
        self.on_decode_error: list[ClientDecodeErrorCallback] = callback_list(
            on_decode_error
        )
        self.on_request: list[ClientRequestHandler] = callback_list(on_request)
        self._credentials = (
            None
            if credentials is None
            else self.options.connection.codec.encode(credentials)
        )
        if self._credentials is not None and not self.options.hello.extensions:
            raise ValueError("credentials= needs extensions=True (or 'prefer')")
        # extensions="prefer" and the server did not answer: plain from now.
        self.plain_only = False
        self._fallBack = False
        # The next attempt is plain (a server closed on our hello), and the
        # connection it made.
        self._plainTrial = False
        self._trial: CommsProtocol | None = None
        self.scheduled_delays: list[float] = []
        self.failures = 0
        self._stopped = False
        self._lastFailure: Failure | None = None
        # The next reconnection attempt, while one is scheduled.
        self._retryCall: IDelayedCall | None = None
        self._connectedWaiters: list[Deferred[CommsProtocol]] = []
        self._disconnectedWaiters: list[Deferred[CloseReason | None]] = []
        self._stoppedWaiters: list[Deferred[None]] = []
        # Every protocol built and not yet lost (one in a TLS handshake is
        # not the connection yet, but stop() must end it too).
        self._protocols: set[CommsProtocol] = set()

    def __repr__(self) -> str:
        state = "connected" if self.connection else "not connected"
        return f"<CommsClientFactory {self.address!r} {state}>"

    @property
    def reactor(self) -> Any:
        """
        The reactor this factory uses (the global one unless one was given).
        """
        if self._reactor is None:
            self._reactor = default_reactor()
            self.clock = self._reactor
        return self._reactor

    @reactor.setter
    def reactor(self, reactor: Any) -> None:
        self._reactor = self.clock = reactor

    @property
    def connected(self) -> bool:
        """
        Whether a connection is up and accepting messages.
        """
        return self.connection is not None and not self.connection.closing

    # -- connecting -------------------------------------------------------

    def connectTCP(
        self, host: str, port: int, timeout: float = 30, bindAddress: Any = None
    ) -> IConnector:
        """
        Connect over TCP.
        """
        self.address = (host, port)
        self._starting()
        return self.reactor.connectTCP(  # type: ignore[no-any-return]
            host, port, self, timeout, bindAddress
        )

    def connectSSL(
        self,
        host: str,
        port: int,
        *,
        trust_root: Any = None,
        client_certificate: Any = None,
        hostname: str | None = None,
        timeout: float = 30,
    ) -> IConnector:
        """
        Connect over TLS. The server's certificate is verified against
        C{trust_root} (default: the platform's trust store) and must match
        C{hostname} (default: C{host}).

        @param trust_root: an C{IOpenSSLTrustRoot}, a
            C{twisted.internet.ssl.Certificate}, or a path to a PEM file of
            CA certificates.
        @param client_certificate: a C{PrivateCertificate} to present, if the
            server asks for one.
        @raise ImportError: the C{tls} extra is not installed
            (C{pip install twcomms[tls]}).
        """
        options = client_tls_options(
            hostname or host,
            trust_root=trust_root,
            client_certificate=client_certificate,
        )
        self.address = (host, port)
        self._starting()
        return self.reactor.connectSSL(  # type: ignore[no-any-return]
            host, port, self, options, timeout
        )

    def connectUNIX(self, path: str, timeout: float = 30) -> IConnector:
        """
        Connect to a UNIX socket.
        """
        self.address = path
        self._starting()
        return self.reactor.connectUNIX(  # type: ignore[no-any-return]
            path, self, timeout
        )

    def startedConnecting(self, connector: IConnector) -> None:
        # Known from the first attempt, so stop() can cancel it.
        self.connector = connector

    def _starting(self) -> None:
        """
        A connect* call: (re)arm the factory, even after an earlier stop or
        a lost connection without autoReconnect.
        """
        self._stopped = False
        self.continueTrying = 1 if self.autoReconnect else 0

    def buildProtocol(self, addr: Any) -> CommsProtocol:
        receiver = ClientConnection(self)
        options = self.options
        trial, self._plainTrial = self._plainTrial, False
        wanted = options.hello.extensions and not (self.plain_only or trial)
        proto = CommsProtocol(
            receiver,
            options=options.connection,
            clock=self.reactor,
            negotiation=client_hello(options, self._credentials) if wanted else None,
        )
        receiver.protocol = proto
        self._trial = proto if trial else None
        self._protocols.add(proto)
        proto.factory = self
        return proto

    def forEndpoint(self) -> EndpointFactory:
        """
        A protocol factory for Twisted's C{ClientService} (or any endpoint's
        C{connect}) that builds this client's protocol, with the same
        callbacks, without this factory's own reconnection (the service does
        that).
        """
        return EndpointFactory(self)

    # -- Deferreds --------------------------------------------------------

    def whenConnected(self) -> Deferred[CommsProtocol]:
        """
        A L{Deferred} firing with the L{CommsProtocol} once connected (at
        once if connected now). It fails with L{GaveUpError} if the factory
        stops trying first.
        """
        if self.connected:
            assert self.connection is not None
            return succeed(self.connection)
        if self._stopped:
            return fail(self._gaveUpError())
        d: Deferred[CommsProtocol] = Deferred()
        self._connectedWaiters.append(d)
        return d

    def whenDisconnected(self) -> Deferred[CloseReason | None]:
        """
        A L{Deferred} firing with the L{CloseReason} once the current
        connection closes (with L{None} at once if not connected).
        """
        if self.connection is None:
            return succeed(None)
        d: Deferred[CloseReason | None] = Deferred()
        self._disconnectedWaiters.append(d)
        return d

    def whenStopped(self) -> Deferred[None]:
        """
        A L{Deferred} firing once the factory has stopped trying and no
        connection remains.
        """
        if self._stopped and self.connection is None and not self._protocols:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._stoppedWaiters.append(d)
        return d

    # -- sending and stopping -------------------------------------------

    def send(self, message: Any) -> None:
        """
        Encode and send one message on the current connection.

        @raise NotConnectedError: there is no connection now (wait for
            L{whenConnected}).
        @raise EncodeError: the message cannot be encoded.
        @raise MessageTooLargeError: it is over the maximum message size.
        @raise SlowConsumerError: the server is not reading and the outbound
            limit would be exceeded.
        """
        proto = self.connection
        if proto is None:
            raise NotConnectedError(
                f"not connected to {self._where()}; wait for whenConnected() "
                f"before sending"
            )
        proto.sendMessage(message)

    @property
    def identity(self) -> str | None:
        """
        Who the server says we are, once authenticated (L{None}: not).
        """
        return self.connection.identity if self.connection is not None else None

    def request(self, message: Any, timeout: float | None = -1.0) -> Deferred[Any]:
        """
        Send C{message} as a request on the extended connection; a
        L{Deferred} for the server's reply (see L{CommsProtocol.request};
        default timeout: the C{request_timeout} option). It fails with
        L{NotConnectedError} when not connected, and C{NotNegotiatedError}
        on a plain connection.
        """
        try:
            return self._connection().request(message, timeout)
        except Exception:
            return fail()

    def join(self, room: str, timeout: float | None = -1.0) -> Deferred[bool]:
        """
        Ask the server to put this connection in C{room}: C{True} if it
        was not in it, C{False} if it was; fails with C{RemoteError}
        (C{RoomRefused}) if the server's policy refuses.
        """
        return ask_room(self.connection, room, True, self._timeout(timeout))

    def leave(self, room: str, timeout: float | None = -1.0) -> Deferred[bool]:
        """
        Ask the server to take this connection out of C{room} (as L{join}).
        """
        return ask_room(self.connection, room, False, self._timeout(timeout))

    def _timeout(self, timeout: float | None) -> float | None:
        if timeout is not None and timeout < 0:
            return self.options.extended.request_timeout
        return timeout

    def _connection(self) -> CommsProtocol:
        proto = self.connection
        if proto is None:
            raise NotConnectedError(
                f"not connected to {self._where()}; wait for whenConnected()"
            )
        return proto

    def stop(self) -> Deferred[None]:
        """
        Stop for good: no more reconnection attempts, and the established
        connection (if any) is closed once what was sent is written.

        @return: L{whenStopped}.
        """
        self.stopTrying()
        if self.connection is not None:
            self.connection.close(CloseReason.CLOSED)
        for proto in list(self._protocols):
            if proto is not self.connection:
                # Not a connection yet (a TLS handshake in progress).
                proto.abort(CloseReason.CLOSED)
        return self.whenStopped()

    # -- ReconnectingClientFactory ----------------------------------------

    def _stable(self) -> None:
        self._stableCall = None
        self.resetDelay()
        if self._trial is not None and self._trial is self.connection:
            # The server closed on our hello, and keeps a plain connection:
            # it does not speak extensions. Plain from now on.
            self.plain_only = True
            _log.info(
                "{where} takes plain connections: plain from now on",
                where=self._where(),
            )

    def _cancelStable(self) -> None:
        cancel_call(self._stableCall)
        self._stableCall = None

    def stopTrying(self) -> None:
        self._cancelStable()
        cancel_call(self._retryCall)
        self._retryCall = None
        super().stopTrying()  # type: ignore[no-untyped-call]
        self._stopped = True
        self._failConnectedWaiters()
        self._maybeStopped()

    def resetDelay(self) -> None:
        """
        Reset the delay and the retry count (called once a connection has
        stayed up for L{STABLE_AFTER} seconds). Unlike Twisted's, this never
        re-enables retrying after L{stopTrying}.
        """
        self.delay = self.initialDelay
        self.retries = 0

    def retry(self, connector: IConnector | None = None) -> None:
        """
        Schedule the next connection attempt: the current delay, with
        jitter, clamped to C{[0, max_delay]}; then grow the delay.
        """
        if not self.continueTrying:
            return
        if connector is None:
            if self.connector is None:
                raise ValueError("no connector to retry")
            connector = self.connector
        self.retries += 1
        if self.maxRetries is not None and self.retries > self.maxRetries:
            _log.warn(
                "giving up on {where} after {retries} failed attempts",
                where=self._where(),
                retries=self.retries - 1,
            )
            self.continueTrying = 0
            self._stopped = True
            self._failConnectedWaiters()
            self._maybeStopped()
            return
        delay = self.delay
        if self.jitter:
            delay = self._rng.normalvariate(delay, delay * self.jitter)
        delay = min(max(delay, 0.0), self.maxDelay)
        self.scheduled_delays.append(delay)
        _log.info(
            "reconnecting to {where} in {delay:.2f} seconds",
            where=self._where(),
            delay=delay,
        )

        def reconnect() -> None:
            self._retryCall = None
            connector.connect()

        # Our own timer, cancelled by our stopTrying (Twisted's retry() keeps
        # its own in a private attribute, which nothing here touches).
        self._retryCall = self.reactor.callLater(delay, reconnect)
        self.delay = min(self.delay * self.factor, self.maxDelay)

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        self.failures += 1
        self._lastFailure = reason
        _log.info(
            "connection to {where} failed: {error}",
            where=self._where(),
            error=reason.getErrorMessage(),
        )
        self._afterConnection(connector)

    def clientConnectionLost(self, connector: IConnector, reason: Failure) -> None:
        self._afterConnection(connector)

    def _afterConnection(self, connector: IConnector) -> None:
        if self._fallBack:
            # extensions="prefer" and no answer: again at once, plain.
            self._fallBack = False
            if not self._stopped:
                connector.connect()
                return
        if self.continueTrying:
            self.connector = connector
            self.retry()
        else:
            self._stopped = True
            self._failConnectedWaiters()
            self._maybeStopped()

    # -- events from the connection -------------------------------------

    def connectionStarted(self, proto: CommsProtocol) -> None:
        """
        C{proto} is connected (called by its receiver).
        """
        if self._stopped:
            # Stopped while this attempt was completing: do not keep it.
            proto.close(CloseReason.CLOSED)
            return
        self.connection = proto
        self._stableCall = self.reactor.callLater(STABLE_AFTER, self._stable)
        self._lastFailure = None
        _log.info("connected to {peer}", peer=proto.peer)
        # Callbacks first: whoever waits on whenConnected (a threaded
        # connect()) then sees everything on_connect set up.
        call_each(self.on_connect, "on_connect", self)
        waiters, self._connectedWaiters = self._connectedWaiters, []
        for d in waiters:
            d.callback(proto)

    def connectionEnded(
        self, proto: CommsProtocol | None, reason: CloseReason, failure: Failure
    ) -> None:
        """
        C{proto} is lost, or failed before it was connected (called by its
        receiver).
        """
        self._protocols.discard(proto)
        if proto is not None and proto is not self.connection and self._stopped:
            # An attempt that completed (or was in its handshake) after
            # stop(), closed by us.
            self._maybeStopped()
            return
        if proto is None or proto is not self.connection:
            # Never became a connection (a TLS handshake failed, or the
            # extended protocol's negotiation).
            self.failures += 1
            self._lastFailure = failure
            error = proto.negotiationError if proto is not None else None
            if error is not None:
                self._negotiationFailed(error)
                return
            _log.warn(
                "connection to {where} failed before it was established: {error}",
                where=self._where(),
                error=failure.getErrorMessage(),
            )
            return
        self.connection = None
        self._cancelStable()
        _log.info("disconnected from {peer}: {reason}", peer=proto.peer, reason=reason)
        call_each(self.on_close, "on_close", self, reason)
        waiters, self._disconnectedWaiters = self._disconnectedWaiters, []
        for d in waiters:
            d.callback(reason)
        self._maybeStopped()

    def _negotiationFailed(self, error: Exception) -> None:
        self._lastFailure = Failure(error)
        if isinstance(error, ExtensionsRefusedError):
            if self.options.hello.extensions == "prefer":
                self._fallBack = True
                if self._credentials is not None:
                    _log.warn(
                        "{where}: falling back to plain, so without the "
                        "credentials (only the extended protocol carries them)",
                        where=self._where(),
                    )
                if error.closed:
                    # Closed on our hello (an original server), or full (a
                    # twcomms one): plain this once; remembered only if the
                    # plain connection then stays up (see _stable).
                    self._plainTrial = True
                    _log.warn(
                        "{where} closed the connection on our hello; trying plain",
                        where=self._where(),
                    )
                    return
                _log.warn(
                    "{where} does not speak twcomms extensions; connecting "
                    "plain, now and on every reconnection",
                    where=self._where(),
                )
                self.plain_only = True
        elif isinstance(error, AuthenticationError):
            # The same credentials would be refused again.
            self.stopTrying()

    def _maybeStopped(self) -> None:
        if self._stopped and self.connection is None and not self._protocols:
            waiters, self._stoppedWaiters = self._stoppedWaiters, []
            for d in waiters:
                d.callback(None)

    def _failConnectedWaiters(self) -> None:
        waiters, self._connectedWaiters = self._connectedWaiters, []
        if waiters:
            error = self._gaveUpError()
            for d in waiters:
                d.errback(error)

    def _gaveUpError(self) -> Exception:
        last = self._lastFailure
        if last is not None and isinstance(
            last.value, (ExtensionsRefusedError, AuthenticationError)
        ):
            return last.value
        detail = f": {last.getErrorMessage()}" if last is not None else ""
        return GaveUpError(
            f"stopped trying to connect to {self._where()}{detail}", last
        )

    def _where(self) -> str:
        if isinstance(self.address, tuple):
            return f"{self.address[0]}:{self.address[1]}"
        return str(self.address)
