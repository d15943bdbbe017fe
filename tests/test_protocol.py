"""
Tests for L{twcomms.connection.protocol.CommsProtocol}: in memory, no reactor.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure

from harness.transport import TCPStringTransport
from harness.wire import frame as reference_frame
from harness.wire import parse as reference_parse
from twcomms.connection import CloseReason, CommsProtocol, PauseReason
from twcomms.errors import (
    ConnectionClosedError,
    DecodeError,
    InvalidJSONError,
    MessageTooLargeError,
    NotConnectedError,
)
from twcomms.options import ConnectionOptions


class RecordingReceiver:
    def __init__(self) -> None:
        self.sender: CommsProtocol | None = None
        self.messages: list[Any] = []
        self.errors: list[DecodeError] = []
        self.closed: list[tuple[CloseReason, Failure]] = []

    def startReceivingMessages(self, sender: CommsProtocol) -> None:
        self.sender = sender

    def messageReceived(self, message: Any) -> None:
        self.messages.append(message)

    def messageDecodeFailed(self, error: DecodeError) -> None:
        self.errors.append(error)

    def stopReceivingMessages(self, reason: CloseReason, failure: Failure) -> None:
        self.closed.append((reason, failure))


def make(
    data_type: str = "json", transport: StringTransport | None = None, **kw: Any
) -> tuple[CommsProtocol, RecordingReceiver, StringTransport]:
    receiver = RecordingReceiver()
    proto = CommsProtocol(receiver, data_type, **kw)
    t = transport if transport is not None else StringTransport()
    proto.makeConnection(t)
    return proto, receiver, t


def test_connection_made_hands_the_sender_to_the_receiver() -> None:
    proto, receiver, _ = make()
    assert receiver.sender is proto


@pytest.mark.parametrize(
    ("data_type", "sent", "received"),
    [
        ("json", {"a": [1, 2]}, {"a": [1, 2]}),
        ("json", [1, "x"], [1, "x"]),
        ("json", '{"raw": true}', {"raw": True}),
        ("string", "héllo", "héllo"),
        ("binary", b"\x00\xff", b"\x00\xff"),
        ("binary", bytearray(b"ab"), b"ab"),
    ],
)
def test_send_and_receive_each_type(data_type: str, sent: Any, received: Any) -> None:
    a, _, ta = make(data_type)
    b, rb, _ = make(data_type)
    a.sendMessage(sent)
    b.dataReceived(ta.value())
    assert rb.messages == [received]
    assert a.messagesSent == 1 and b.messagesReceived == 1
    assert a.bytesSent == b.bytesReceived == len(ta.value()) - 4


def test_big_endian() -> None:
    a, _, ta = make("string", byteOrder="big")
    a.sendMessage("abc")
    assert ta.value() == b"\x00\x00\x00\x03abc"
    b, rb, _ = make("string", byteOrder="big")
    b.dataReceived(ta.value())
    assert rb.messages == ["abc"]


def test_receiver_decodes_by_its_own_type() -> None:
    a, _, ta = make("json")
    a.sendMessage({"k": "v"})
    for data_type, expected in [
        ("json", {"k": "v"}),
        ("string", '{"k": "v"}'),
        ("binary", b'{"k": "v"}'),
    ]:
        b, rb, _ = make(data_type)
        b.dataReceived(ta.value())
        assert rb.messages == [expected]


def test_decode_error_goes_to_the_hook_and_the_connection_stays_up() -> None:
    proto, receiver, t = make("json")
    with capturedLogs() as events:
        proto.dataReceived(
            reference_frame(b"not json")
            + reference_frame(b"\xff")
            + reference_frame(b"")
            + reference_frame(b'{"ok": 1}')
        )
    assert receiver.messages == [{"ok": 1}]
    assert [e.payload for e in receiver.errors] == [b"not json", b"\xff", b""]
    assert proto.decodeErrors == 3
    assert not t.disconnecting
    assert sum("did not decode" in e["log_format"] for e in events) == 3


def test_zero_length_messages() -> None:
    proto, receiver, _ = make("string")
    proto.dataReceived(reference_frame(b""))
    proto2, receiver2, _ = make("binary")
    proto2.dataReceived(reference_frame(b""))
    assert receiver.messages == [""] and receiver2.messages == [b""]


def test_invalid_json_text_raises_before_writing() -> None:
    proto, _, t = make("json")
    with pytest.raises(InvalidJSONError):
        proto.sendMessage("not json")
    assert t.value() == b""


def test_outgoing_over_max_message_size_raises_before_writing() -> None:
    proto, _, t = make("binary", max_message_size=100)
    proto.sendMessage(b"x" * 100)
    before = t.value()
    with pytest.raises(MessageTooLargeError, match="101 bytes"):
        proto.sendMessage(b"x" * 101)
    assert t.value() == before
    assert proto.messagesSent == 1


def test_incoming_over_max_message_size_closes_with_reason() -> None:
    proto, receiver, t = make("binary", max_message_size=100)
    proto.dataReceived(struct.pack("<I", 101) + b"x" * 101 + reference_frame(b"y"))
    assert receiver.messages == []
    assert t.disconnecting
    proto.connectionLost(Failure(ConnectionDone()))
    assert receiver.closed[0][0] is CloseReason.OVERSIZE


def test_peer_closed_and_error_reasons() -> None:
    proto, receiver, _ = make()
    proto.connectionLost(Failure(ConnectionDone()))
    assert receiver.closed[0][0] is CloseReason.PEER_CLOSED
    proto, receiver, _ = make()
    proto.connectionLost(Failure(ConnectionLost()))
    assert receiver.closed[0][0] is CloseReason.ERROR


def test_close_is_local_and_sending_after_close_raises() -> None:
    proto, receiver, t = make()
    proto.sendMessage({"a": 1})
    proto.close()
    assert t.disconnecting
    with pytest.raises(ConnectionClosedError, match="closed"):
        proto.sendMessage({"b": 2})
    with pytest.raises(ConnectionError):
        proto.sendString(b"{}")
    proto.close()  # twice is fine
    proto.connectionLost(Failure(ConnectionDone()))
    assert receiver.closed[0][0] is CloseReason.CLOSED
    assert reference_parse(t.value()) == [b'{"a": 1}']


def test_sending_after_connection_lost_raises() -> None:
    proto, _, _ = make()
    proto.connectionLost(Failure(ConnectionLost()))
    with pytest.raises(ConnectionClosedError):
        proto.sendMessage({})


def test_sending_before_connecting_raises() -> None:
    proto = CommsProtocol(RecordingReceiver())
    with pytest.raises(NotConnectedError):
        proto.sendMessage({})


def test_peer_vanishing_mid_message_is_logged_and_freed() -> None:
    proto, receiver, _ = make("binary")
    proto.dataReceived(reference_frame(b"whole") + struct.pack("<I", 1000) + b"part")
    with capturedLogs() as events:
        proto.connectionLost(Failure(ConnectionLost()))
    assert receiver.messages == [b"whole"]
    assert proto.incompleteFrameBytes == 0
    (event,) = [e for e in events if "middle of a message" in e["log_format"]]
    assert event["incomplete"] == 8


def test_abort_sets_the_reason() -> None:
    proto, receiver, _ = make()
    proto.abort(CloseReason.SLOW_CONSUMER)
    proto.connectionLost(Failure(ConnectionLost()))
    assert receiver.closed[0][0] is CloseReason.SLOW_CONSUMER


def test_nodelay_on_tcp() -> None:
    t = TCPStringTransport()
    make(transport=t)
    assert t.noDelay


@pytest.mark.parametrize("bad", [0, -1, 2**32, 1.5, True])
def test_max_message_size_validation(bad: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        ConnectionOptions(max_message_size=bad)


def test_bad_options_fail_clearly() -> None:
    with pytest.raises(ValueError, match="messageDataType"):
        CommsProtocol(RecordingReceiver(), "xml")
    with pytest.raises(ValueError, match="byteOrder"):
        CommsProtocol(RecordingReceiver(), byteOrder="middle")


def test_close_reason_prints_as_text() -> None:
    assert str(CloseReason.SLOW_CONSUMER) == "slow consumer"


def test_close_unregisters_the_write_monitor() -> None:
    """
    A transport with a registered producer does not close on
    loseConnection until the producer is unregistered (and resumes a paused
    producer instead of closing): close() must unregister ours.
    """
    proto, _, t = make()
    assert t.producer is not None
    t.producer.pauseProducing()
    proto.close()
    assert t.producer is None and t.disconnecting


def test_oversize_close_unregisters_the_write_monitor() -> None:
    proto, _, t = make(max_message_size=10)
    proto.dataReceived(struct.pack("<I", 11))
    assert t.producer is None and t.disconnecting


def test_large_payload_is_streamed_in_slices_behind_which_others_wait() -> None:
    """
    A payload over 4 MiB is written in 1 MiB slices as the transport drains
    (Twisted would copy it whole into one new buffer); what is sent after
    it waits its turn; close() waits for it; whenDrained fires at the end.
    """
    proto, _, t = make("binary", max_message_size=64 << 20)
    writes: list[int] = []
    real_write = t.write

    def recording_write(data: bytes) -> None:
        writes.append(len(data))
        real_write(data)

    t.write = recording_write  # type: ignore[method-assign]
    big = bytes(range(256)) * (10 * 4096)  # 10 MiB
    t.producer.pauseProducing()  # the socket buffer is full
    proto.sendMessage(big)
    proto.sendMessage(b"after")
    drained: list[object] = []
    proto.whenDrained().addCallback(drained.append)
    proto.close()
    assert writes == [] and not t.disconnecting  # waiting for the socket
    t.producer.resumeProducing()  # (StringTransport never pauses by itself)
    assert max(writes) == 1 << 20  # slices, never the whole payload
    assert reference_parse(t.value()) == [big, b"after"]
    assert drained == [None]
    assert t.disconnecting  # closed once everything was written


# -- reading paused by reason ---------------------------------------------------


def test_reading_resumes_only_when_no_reason_holds() -> None:
    clock = Clock()
    proto, receiver, t = make(idle_timeout=10, clock=clock)
    proto.pauseReading(PauseReason.RECEIVE_WINDOW)
    proto.pauseReading("pacing")
    proto.pauseReading("pacing")  # twice for one reason is once
    assert t.producerState == "paused"
    assert proto.readPausedFor == {"receive window", "pacing"}
    proto.dataReceived(reference_frame(b'{"n": 1}'))
    assert receiver.messages == []  # kept while paused
    clock.advance(60)  # we are not listening: the peer is not idle
    assert not t.disconnecting
    proto.resumeReading(PauseReason.RECEIVE_WINDOW)
    assert t.producerState == "paused"  # "pacing" still holds
    assert receiver.messages == []
    proto.resumeReading("never paused for this")  # nothing
    assert t.producerState == "paused"
    proto.resumeReading("pacing")
    assert t.producerState == "producing"
    assert proto.readPausedFor == frozenset()
    assert receiver.messages == [{"n": 1}]
    clock.advance(10)  # the idle timer runs again
    assert proto.closeReason is CloseReason.IDLE_TIMEOUT


def test_pause_producing_is_one_reason_among_others() -> None:
    proto, receiver, t = make()
    proto.pauseReading(PauseReason.RECEIVE_WINDOW)
    proto.pauseProducing()
    assert proto.readPausedFor == {PauseReason.RECEIVE_WINDOW, PauseReason.PRODUCER}
    proto.resumeProducing()  # does not undo the receive window's pause
    assert t.producerState == "paused"
    proto.resumeReading(PauseReason.RECEIVE_WINDOW)
    assert t.producerState == "producing"


def test_a_callback_pausing_while_kept_data_is_delivered_keeps_the_rest() -> None:
    class PausingReceiver(RecordingReceiver):
        def messageReceived(self, message: Any) -> None:
            super().messageReceived(message)
            if message == 1:
                proto.pauseReading("b")

    receiver = PausingReceiver()
    proto = CommsProtocol(receiver)
    t = StringTransport()
    proto.makeConnection(t)
    proto.pauseReading("a")
    proto.dataReceived(reference_frame(b"1") + reference_frame(b"2"))
    proto.dataReceived(reference_frame(b"3"))
    proto.resumeReading("a")
    assert receiver.messages == [1]
    assert proto.readPausedFor == {"b"} and t.producerState == "paused"
    proto.resumeReading("b")
    assert receiver.messages == [1, 2, 3]
