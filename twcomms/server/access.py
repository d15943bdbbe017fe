"""
What a server grants extended clients and how it answers their control
requests: the features for a hello (L{Access.grant}), authentication with
failures rate-limited per address (L{AuthThrottle}), client-joined rooms
under a policy, and requests passed to the C{on_request} handlers.

Thread: the reactor thread only. The callables given (C{authenticate},
C{room_policy}, request handlers) are called on it and may return
Deferreds.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from twcomms.connection import CloseReason
from twcomms.connection.events import call_each, first_answer
from twcomms.errors import AuthenticationError, InvalidRoomError, RemoteError
from twcomms.options import MIN_HEARTBEAT_INTERVAL, Options
from twcomms.wire.extended import Hello, Kind, check_room

if TYPE_CHECKING:
    from twcomms.server.factory import CommsServerFactory
    from twcomms.server.handle import ClientHandle

__all__ = ["Access", "AuthThrottle", "Authenticator", "RoomPolicy"]

_log = Logger()

#: C{authenticate(credentials, client)}: an identity (a C{str}), or
#: L{None}/C{False} to refuse; may raise to refuse, or return a Deferred.
Authenticator = Callable[[Any, "ClientHandle"], Any]
#: C{room_policy(client, room, joining)}: C{True} to allow; may return a
#: Deferred.
RoomPolicy = Callable[["ClientHandle", str, bool], Any]

#: Addresses remembered by the throttle at most (the oldest are forgotten
#: first), so a flood of addresses cannot grow it without bound.
MAX_THROTTLED_ADDRESSES = 100_000


class AuthThrottle:
    """
    Counts failed authentications per peer address over a sliding window;
    an address with C{max_failures} in the window is refused unchecked
    until the oldest leaves it. Checks in progress count as failures to
    be (L{admit}), so guesses sent at once on many connections get no
    more checks than that either.
    """

    def __init__(self, max_failures: int, window: float, clock: IReactorTime) -> None:
        self.max_failures = max_failures
        self.window = window
        self._clock = clock
        self._failures: collections.OrderedDict[str, collections.deque[float]] = (
            collections.OrderedDict()
        )
        # Per address: checks in progress, and attempts waiting for them.
        self._checking: dict[str, int] = {}
        self._held: dict[str, list[Deferred[None]]] = {}

    def wait(self, address: str) -> float:
        """
        Seconds until C{address} may try again (0: now).
        """
        times = self._failures.get(address)
        if times is None:
            return 0.0
        now = self._clock.seconds()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[address]
            return 0.0
        if len(times) < self.max_failures:
            return 0.0
        return times[0] + self.window - now

    def admit(self, address: str) -> Deferred[float]:
        """
        When an attempt from C{address} may be checked: fires with 0 once
        checking it, with the checks in progress, cannot take the address
        over C{max_failures} (call L{done} once it is decided), or with the
        seconds to wait, to refuse it unchecked.
        """
        wait = self.wait(address)
        if wait:
            return succeed(wait)
        failures = len(self._failures.get(address, ()))
        checking = self._checking.get(address, 0)
        if failures + checking < self.max_failures:
            self._checking[address] = checking + 1
            return succeed(0.0)
        held: Deferred[None] = Deferred()
        self._held.setdefault(address, []).append(held)
        return held.addCallback(lambda _: self.admit(address))

    def done(self, address: str) -> None:
        """
        A check that L{admit} allowed is decided (and L{failed} called if
        it failed): the attempts waiting for it are looked at again.
        """
        checking = self._checking.pop(address) - 1
        if checking:
            self._checking[address] = checking
        for held in self._held.pop(address, ()):
            held.callback(None)

    def failed(self, address: str) -> None:
        times = self._failures.pop(address, None)
        if times is None:
            times = collections.deque(maxlen=self.max_failures)
            if len(self._failures) >= MAX_THROTTLED_ADDRESSES:
                self._failures.popitem(last=False)
        times.append(self._clock.seconds())
        self._failures[address] = times


class Access:
    """
    A server factory's answers to extended clients.
    """

    def __init__(
        self,
        factory: CommsServerFactory,
        authenticate: Authenticator | None,
        room_policy: RoomPolicy | None,
    ) -> None:
        options: Options = factory.options
        self.factory = factory
        self.authenticate = authenticate
        self.room_policy = room_policy
        self.options = options
        self.throttle = AuthThrottle(
            options.access.auth_max_failures,
            options.access.auth_failure_window,
            factory.clock,
        )

    def check(self) -> None:
        """
        Called before the server listens.

        @raise ValueError: C{require_auth} without an C{authenticate}, or
            without C{accept_extensions} (nobody could authenticate).
        """
        access = self.options.access
        if access.require_auth and not access.accept_extensions:
            raise ValueError(
                "require_auth=True needs accept_extensions=True: clients "
                "authenticate over the extended protocol"
            )
        if access.require_auth and self.authenticate is None:
            raise ValueError(
                "require_auth=True needs authenticate=, the callable that checks "
                "credentials (twistd: set server.access.authenticate in --app)"
            )

    def grant(self, hello: Hello) -> dict[str, dict[str, Any]]:
        """
        The features granted for C{hello}: those asked for that this server
        offers. A client may ask for a shorter heartbeat interval and
        timeout than the server's (not under 1 s), never longer ones.
        """
        wanted = hello.features
        extended = self.options.extended
        granted: dict[str, dict[str, Any]] = {}
        interval = extended.heartbeat_interval
        if "heartbeat" in wanted and interval is not None:
            ask = wanted["heartbeat"]
            granted["heartbeat"] = {
                "interval": _clamp(ask.get("interval"), interval),
                "timeout": _clamp(ask.get("timeout"), extended.heartbeat_timeout),
            }
        if "request" in wanted:
            granted["request"] = {"max_in_flight": extended.max_requests_in_flight}
        required = self.options.access.require_auth
        if ("auth" in wanted or required) and self.authenticate is not None:
            # Announced even unasked when required: a client without
            # credentials then fails at once, saying why, rather than
            # after auth_timeout.
            granted["auth"] = {"required": required}
        if "rooms" in wanted:
            granted["rooms"] = {}
        return granted

    # -- control requests from a client ----------------------------------------

    def controlRequest(
        self, client: ClientHandle, kind: Kind, body: bytes
    ) -> Deferred[bytes]:
        """
        Answer an C{AUTH}, C{JOIN} or C{LEAVE} from C{client}: the reply's
        body, or a failure (sent as an error reply).
        """
        if kind == Kind.AUTH:
            return self._authenticate(client, body)
        if not client.registered:
            return _refuse(
                AuthenticationError("NotAuthenticated", "authenticate first")
            )
        try:
            room = check_room(bytes(body).decode("utf-8"))
        except (UnicodeDecodeError, InvalidRoomError) as e:
            return _refuse(RemoteError("InvalidRoomError", str(e)))
        joining = kind == Kind.JOIN
        if self.room_policy is None:
            allowed: Deferred[Any] = succeed(True)
        else:
            allowed = maybeDeferred(self.room_policy, client, room, joining)
        return allowed.addCallback(self._roomDecided, client, room, joining)

    def _roomDecided(
        self, allowed: Any, client: ClientHandle, room: str, joining: bool
    ) -> bytes:
        what = "joining" if joining else "leaving"
        if not allowed:
            raise RemoteError("RoomRefused", f"the server refused {what} {room!r}")
        if not client.connected:
            raise RemoteError("ClientGone", "disconnected meanwhile")
        factory = self.factory
        changed = factory.join(client, room) if joining else factory.leave(client, room)
        return b"\x01" if changed else b"\x00"

    def _authenticate(self, client: ClientHandle, body: bytes) -> Deferred[bytes]:
        return self.throttle.admit(client.address).addCallback(
            self._check, client, body
        )

    def _check(self, wait: float, client: ClientHandle, body: bytes) -> Deferred[bytes]:
        assert self.authenticate is not None  # auth is granted only with it
        address = client.address
        if wait:
            _log.warn(
                "refused authentication from {peer} unchecked: too many failed "
                "attempts from {address}",
                peer=client.protocol.peer if client.protocol else address,
                address=address,
            )
            return _refuse(
                AuthenticationError(
                    "TooManyFailures",
                    f"too many failed attempts from your address; try again "
                    f"in {wait:.0f} s",
                )
            )
        try:
            credentials = self.factory.options.connection.codec.decode(body)
        except ValueError as e:
            refusal = self._failed(client, f"credentials did not decode: {e}")
            self.throttle.done(address)
            return refusal
        d = maybeDeferred(self.authenticate, credentials, client)

        def decided(identity: Any) -> bytes:
            if identity is None or identity is False or identity == "":
                raise AuthenticationError("AuthenticationFailed", "credentials refused")
            name = str(identity)
            self.factory.clientAuthenticated(client, name)
            return name.encode("utf-8")

        def refused(failure: Failure) -> Failure:
            error = failure.value
            if not isinstance(error, AuthenticationError):
                if not isinstance(error, RemoteError):
                    # Credentials are never logged; the callable's own
                    # error is, so the operator can fix it.
                    _log.failure("authenticate() raised", failure)
                failure = Failure(
                    AuthenticationError("AuthenticationFailed", "credentials refused")
                )
            self.throttle.failed(address)
            _log.warn(
                "authentication from {peer} failed (reason auth failed)",
                peer=client.protocol.peer if client.protocol else address,
            )
            return failure

        def settled(result: Any) -> Any:
            self.throttle.done(address)
            return result

        return d.addCallback(decided).addErrback(refused).addBoth(settled)

    def _failed(self, client: ClientHandle, why: str) -> Deferred[bytes]:
        self.throttle.failed(client.address)
        return _refuse(AuthenticationError("AuthenticationFailed", why))

    # -- requests -------------------------------------------------------------

    def requestReceived(self, client: ClientHandle, message: Any) -> Any:
        """
        Ask the C{on_request} handlers, in order, for a reply to C{message};
        the first that returns something other than L{None} answers (none:
        the reply is L{None}).
        """
        if not client.registered:
            return _refuse(
                AuthenticationError("NotAuthenticated", "authenticate first")
            )
        factory = self.factory
        if not factory.on_request_done:
            return first_answer(factory.on_request, client, message)
        started = factory.clock.seconds()

        def done(result: Any) -> Any:
            seconds = factory.clock.seconds() - started
            failed = isinstance(result, Failure)
            call_each(
                factory.on_request_done, "on_request_done", client, seconds, failed
            )
            return result

        try:
            answer = first_answer(factory.on_request, client, message)
        except Exception:
            done(Failure())
            raise
        if isinstance(answer, Deferred):
            return answer.addBoth(done)
        done(answer)
        return answer

    def unauthenticated(self, client: ClientHandle, what: str) -> None:
        """
        C{client} sent C{what} before authenticating, on a server that
        requires it: close it (reason C{auth failed}).
        """
        _log.warn(
            "closing connection from {peer}: it sent {what} without "
            "authenticating, and this server requires authentication",
            peer=client.protocol.peer if client.protocol else client.address,
            what=what,
        )
        if client.protocol is not None:
            client.protocol.abort(CloseReason.AUTH_FAILED)


_NOT_AUTHENTICATED = AuthenticationError("NotAuthenticated", "authenticate first")


def _clamp(asked: Any, ours: float) -> float:
    if (
        isinstance(asked, bool)
        or not isinstance(asked, (int, float))
        or not math.isfinite(asked)
    ):
        return ours
    return float(min(max(asked, MIN_HEARTBEAT_INTERVAL), ours))


def _refuse(error: Exception) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(Failure(error))
    return d
