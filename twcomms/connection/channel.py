"""
L{Channel}: what an extended connection adds once the hello was answered
-- control frames in and out, request/reply matched by id (as AMP's
C{BoxDispatcher}: C{_ask} here is L{Channel.ask}, C{_answer} is
L{Channel.answer}), and heartbeats.

The channel knows the frames (L{twcomms.wire.extended}) and the
connection's codec; what a request means is the receiver's business
(L{RequestReceiver}).

Thread: the reactor thread only.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from twcomms.connection.interfaces import CloseReason
from twcomms.connection.timers import Timeout, cancel_call
from twcomms.errors import (
    AuthenticationError,
    ConnectionClosedError,
    DecodeError,
    EncodeError,
    NotNegotiatedError,
    RemoteError,
    RequestTimeoutError,
)
from twcomms.options import ExtensionOptions
from twcomms.wire.extended import WITH_ID, Kind, decode_error, encode_error
from twcomms.wire.framing import header_struct

if TYPE_CHECKING:
    from twcomms.connection.protocol import CommsProtocol

__all__ = ["Channel"]

_log = Logger()

#: Kinds a receiver answers through its C{controlRequest} (a server's).
_CONTROL_REQUESTS = frozenset({Kind.AUTH, Kind.JOIN, Kind.LEAVE})


class Channel:
    """
    The extended side of one connection.

    @ivar features: what was agreed: feature name -> parameters.
    @ivar unknownReplies: replies (and errors) whose id matched no pending
        request: late ones, after a timeout, or a peer's garbage.
    @ivar badFrames: control frames dropped as malformed or of an unknown
        kind.
    @ivar requestsRefused: requests answered at once with C{TooManyRequests}.
    """

    def __init__(
        self,
        protocol: CommsProtocol,
        features: dict[str, dict[str, Any]],
        options: ExtensionOptions,
    ) -> None:
        self.protocol = protocol
        self.features = features
        self._id = header_struct(protocol.structFormat)
        self._ids = itertools.count(1)
        # request id -> (its Deferred, its timeout call, the kind asked).
        self._pending: dict[int, tuple[Deferred[bytes], IDelayedCall | None, int]] = {}
        self._serving = 0
        self.options = options
        self._maxServing = options.max_requests_in_flight
        self.unknownReplies = 0
        self.badFrames = 0
        self.requestsRefused = 0
        self._pinger: LoopingCall | None = None
        self.silence: Timeout | None = None

    def __repr__(self) -> str:
        return f"<Channel {sorted(self.features)} pending={len(self._pending)}>"

    @property
    def pending(self) -> int:
        """
        Requests sent and not yet answered.
        """
        return len(self._pending)

    # -- heartbeats ------------------------------------------------------------

    def startHeartbeats(self, *, ping: bool) -> None:
        """
        Close the connection once the peer has been silent for the agreed
        interval plus timeout (any byte counts; see L{CommsProtocol}); with
        C{ping} (the server), ping it every interval.
        """
        params = self.features.get("heartbeat")
        if params is None:
            return
        interval: Any = params.get("interval")
        timeout: Any = params.get("timeout")
        if not (_seconds(interval) and _seconds(timeout)):
            # (Only a peer that is not twcomms grants such values.)
            _log.warn(
                "{peer} agreed heartbeats with unusable parameters {params!r}: "
                "no heartbeat on this connection",
                peer=self.protocol.peer,
                params=params,
            )
            del self.features["heartbeat"]
            return
        interval = float(interval)
        timeout = float(timeout)
        proto = self.protocol
        self.silence = Timeout(interval + timeout, self._silent, proto.clock)
        if not proto.readPausedFor:
            self.silence.start()
        if ping:
            self._pinger = LoopingCall(self._ping)
            self._pinger.clock = proto.clock
            self._pinger.start(interval, now=False)

    def _ping(self) -> None:
        # Closing, or a slow consumer being closed: nothing to ping.
        with contextlib.suppress(ConnectionError):
            self.send(Kind.PING, b"")

    def _silent(self) -> None:
        params = self.features["heartbeat"]
        _log.info(
            "closing connection from {peer}: nothing received for {seconds} "
            "seconds (heartbeat timeout)",
            peer=self.protocol.peer,
            seconds=float(params["interval"]) + float(params["timeout"]),
        )
        self.protocol.abort(CloseReason.HEARTBEAT_TIMEOUT)

    # -- sending ---------------------------------------------------------------

    def send(self, kind: int, body: bytes, request_id: int | None = None) -> None:
        """
        Write one control frame.
        """
        self.protocol.writeControl(kind, body, request_id)

    def ask(self, kind: int, body: bytes, timeout: float | None) -> Deferred[bytes]:
        """
        Send a request-like frame (C{REQUEST}, C{AUTH}, C{JOIN}, C{LEAVE})
        and return a L{Deferred} for the reply's body. It fails with
        L{RemoteError} (L{AuthenticationError} for C{AUTH}) on an error
        reply, L{RequestTimeoutError} after C{timeout} seconds, and
        L{ConnectionClosedError} if the connection closes first.
        """
        pending = self._pending
        request_id = next(self._ids) & 0xFFFFFFFF
        while request_id in pending or request_id == 0:
            request_id = next(self._ids) & 0xFFFFFFFF
        self.send(kind, body, request_id)
        d: Deferred[bytes] = Deferred()
        call = None
        if timeout is not None:
            call = self.protocol.clock.callLater(
                timeout, self._timedOut, request_id, timeout
            )
        first = not pending
        pending[request_id] = (d, call, kind)
        if first:
            self.protocol.requestsPending()
        return d

    def _timedOut(self, request_id: int, timeout: float) -> None:
        entry = self._pending.pop(request_id, None)
        if not self._pending:
            self.protocol.requestsSettled()
        if entry is not None:
            entry[0].errback(
                RequestTimeoutError(
                    f"no reply from {self.protocol.peer} within {timeout} seconds"
                )
            )

    def request(self, message: Any, timeout: float | None) -> Deferred[Any]:
        """
        Send C{message} as a request; a L{Deferred} for the decoded reply.

        @raise NotNegotiatedError: the peer did not agree request/reply.
        @raise EncodeError: the message cannot be encoded.
        @raise MessageTooLargeError: it is over the maximum message size.
        """
        if "request" not in self.features:
            raise NotNegotiatedError(
                f"{self.protocol.peer} did not agree request/reply; send() instead"
            )
        payload = self.protocol.codec.encode(message)
        return self.ask(Kind.REQUEST, payload, timeout).addCallback(
            self.protocol.codec.decode
        )

    # -- receiving -------------------------------------------------------------

    def controlReceived(self, body: bytes) -> None:
        """
        One control frame's body (after the length).
        """
        if not body:
            self._bad("an empty control frame")
            return
        kind = body[0]
        if kind == Kind.PING:
            with contextlib.suppress(ConnectionError):
                self.send(Kind.PONG, body[1:65])
            return
        if kind == Kind.PONG:
            return  # any byte received already counted as life
        if kind not in WITH_ID:
            self._bad(f"a control frame of unknown kind {kind}")
            return
        if len(body) < 5:
            self._bad(f"a kind {kind} frame without its request id")
            return
        (request_id,) = self._id.unpack_from(body, 1)
        rest = body[5:]
        if kind == Kind.REPLY or kind == Kind.ERROR:
            self._answered(kind, request_id, rest)
        elif kind == Kind.REQUEST:
            self._requestReceived(request_id, rest)
        else:
            self._controlRequest(Kind(kind), request_id, rest)

    def _bad(self, what: str) -> None:
        self.badFrames += 1
        if self.badFrames == 1:
            _log.warn(
                "dropped {what} from {peer} (further ones are only counted)",
                what=what,
                peer=self.protocol.peer,
            )

    def _answered(self, kind: int, request_id: int, rest: bytes) -> None:
        entry = self._pending.pop(request_id, None)
        if entry is None:
            self.unknownReplies += 1
            if self.unknownReplies == 1:
                _log.info(
                    "a reply from {peer} matched no pending request (late, or "
                    "unknown); dropped, and further ones counted",
                    peer=self.protocol.peer,
                )
            return
        d, call, asked = entry
        cancel_call(call)
        if not self._pending:
            self.protocol.requestsSettled()
        if kind == Kind.REPLY:
            d.callback(rest)
            return
        error_type, message = decode_error(rest)
        if asked == Kind.AUTH:
            d.errback(AuthenticationError(error_type, message))
        else:
            d.errback(RemoteError(error_type, message))

    def _requestReceived(self, request_id: int, payload: bytes) -> None:
        if "request" not in self.features:
            self._error(request_id, "NotNegotiated", "request/reply was not agreed")
            return
        try:
            message = self.protocol.codec.decode(payload)
        except DecodeError as e:
            self._error(request_id, "DecodeError", str(e))
            return
        handler = getattr(self.protocol.receiver, "requestReceived", None)
        if handler is None:
            self._error(request_id, "NoHandler", "this peer answers no requests")
            return
        self.answer(request_id, lambda: handler(message), encode=True)

    def _controlRequest(self, kind: Kind, request_id: int, body: bytes) -> None:
        feature = "auth" if kind == Kind.AUTH else "rooms"
        handler = getattr(self.protocol.receiver, "controlRequest", None)
        if feature not in self.features or handler is None:
            self._error(request_id, "NotNegotiated", f"{feature} was not agreed")
            return
        closing = CloseReason.AUTH_FAILED if kind == Kind.AUTH else None
        self.answer(
            request_id, lambda: handler(kind, body), encode=False, closeOnError=closing
        )

    def answer(
        self,
        request_id: int,
        call: Any,
        *,
        encode: bool,
        closeOnError: CloseReason | None = None,
    ) -> None:
        """
        Run C{call()} (a value or a L{Deferred}) and send its result as the
        reply to C{request_id} -- encoded as a message value with
        C{encode}, else as the bytes it is -- or its exception as an error
        reply (type name and message; never a traceback), after which the
        connection is closed for C{closeOnError} if given (a refused
        authentication).
        """
        if self._serving >= self._maxServing:
            self.requestsRefused += 1
            self._error(
                request_id,
                "TooManyRequests",
                f"{self._serving} requests from you are being answered; "
                f"wait for their replies",
            )
            return
        self._serving += 1

        def reply(result: Any) -> None:
            self._serving -= 1
            try:
                body = self.protocol.codec.encode_value(result) if encode else result
                self.send(Kind.REPLY, body, request_id)
            except (EncodeError, ValueError) as e:
                self._error(request_id, type(e).__name__, str(e))
            except ConnectionError:
                pass  # closed meanwhile: nobody to answer

        def failed(failure: Failure) -> None:
            self._serving -= 1
            error = failure.value
            if not isinstance(error, RemoteError):
                _log.failure(
                    "a request handler raised, answering {peer} with an error",
                    failure,
                    peer=self.protocol.peer,
                )
                error_type, message = type(error).__name__, str(error)
            else:
                error_type, message = error.type, error.remote_message
            self._error(request_id, error_type, message)
            if closeOnError is not None:
                self.protocol.close(closeOnError)

        # A handler that answers at once (most do) is answered at once: no
        # Deferred per request (measured: ~20 us of the round trip).
        try:
            result = call()
        except Exception:
            failed(Failure())
            return
        if isinstance(result, Deferred):
            result.addCallbacks(reply, failed)
        else:
            reply(result)

    def _error(self, request_id: int, error_type: str, message: str) -> None:
        with contextlib.suppress(ConnectionError):
            self.send(Kind.ERROR, encode_error(error_type, message), request_id)

    # -- the end ---------------------------------------------------------------

    def connectionLost(self, reason: CloseReason) -> None:
        """
        Fail every pending request and stop the heartbeats.
        """
        if self._pinger is not None and self._pinger.running:
            self._pinger.stop()
        if self.silence is not None:
            self.silence.stop()
        pending, self._pending = self._pending, {}
        if not pending:
            return
        error = ConnectionClosedError(
            f"connection to {self.protocol.peer} closed ({reason}) with "
            f"{len(pending)} requests unanswered"
        )
        for d, call, _ in pending.values():
            cancel_call(call)
            d.errback(error)


def _seconds(value: Any) -> bool:
    """
    Whether C{value} is a usable number of seconds (finite, positive).
    """
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )
