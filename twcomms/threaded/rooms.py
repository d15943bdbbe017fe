"""
Rooms as the threaded API sees them: L{Rooms}, a membership view any
thread may read and change at once, whose changes the reactor then
applies to the server's registry in order with the sends and broadcasts
made before and after them.

Thread: any.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from twcomms.errors import ClientGoneError
from twcomms.server import check_room

__all__ = ["Rooms"]


class Rooms:
    """
    Which rooms each client of a threaded server is in.

    @param apply: called (on the caller's thread) with C{("join" or
        "leave", client, room)} for each change, to carry it to the reactor.
    """

    def __init__(self, apply: Callable[[str, Any, str], None]) -> None:
        self._apply = apply
        self._lock = threading.Lock()
        self._members: dict[str, dict[str, Any]] = {}
        self._of: dict[str, set[str]] = {}

    def join(self, client: Any, room: str, *, carry: bool = True) -> bool:
        """
        Put C{client} (a C{ConnectedClient}) in C{room}; C{True} if it was
        not in it already.

        @param carry: carry the change to the reactor (not when the reactor
            made it: an extended client's own join).
        @raise ClientGoneError: it has disconnected.
        @raise InvalidRoomError: C{room} is not a valid room name.
        """
        check_room(room)
        with self._lock:
            if not client.connected:
                raise ClientGoneError(client.id)
            rooms = self._of.setdefault(client.id, set())
            if room in rooms:
                return False
            rooms.add(room)
            self._members.setdefault(room, {})[client.id] = client
            if carry:
                # Under the lock: changes reach the reactor in the order made.
                self._apply("join", client, room)
        return True

    def leave(self, client: Any, room: str, *, carry: bool = True) -> bool:
        """
        Take C{client} out of C{room}; C{True} if it was in it.
        """
        with self._lock:
            rooms = self._of.get(client.id)
            if not rooms or room not in rooms:
                return False
            self._drop(client.id, room)
            if carry:
                self._apply("leave", client, room)
        return True

    def forget(self, client: Any) -> None:
        """
        C{client} disconnected: it is in no room any more (the registry
        has taken it out of them already).
        """
        with self._lock:
            for room in list(self._of.get(client.id, ())):
                self._drop(client.id, room)

    def _drop(self, client_id: str, room: str) -> None:
        rooms = self._of[client_id]
        rooms.discard(room)
        if not rooms:
            del self._of[client_id]
        members = self._members[room]
        del members[client_id]
        if not members:
            del self._members[room]

    def rooms_of(self, client: Any) -> frozenset[str]:
        with self._lock:
            return frozenset(self._of.get(client.id, ()))

    def members(self, room: str) -> list[Any]:
        with self._lock:
            return list(self._members.get(room, {}).values())

    def rooms(self) -> list[str]:
        with self._lock:
            return list(self._members)
