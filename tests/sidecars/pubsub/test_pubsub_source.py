"""PubSubSource against the real emulator, driven by hand: what requeue, a failed dead-letter publish
and close do at the broker."""
from __future__ import annotations

import time

import pytest

from sidecars.pubsub import PubSubSource, Settings


@pytest.fixture
def make_source(lane):
    made: list[PubSubSource] = []

    def make(**overrides) -> PubSubSource:
        emu = lane.emu
        settings = Settings(emu.subscription_path(lane.subscription), emu.topic_path(lane.dlq_topic), window=10,
                            requeue_delay_s=0.2, **overrides)
        src = PubSubSource(settings, subscriber=emu.new_subscriber(), publisher=emu.new_publisher())
        made.append(src)
        return src

    yield make
    for src in made:
        if not src._closing:
            src.close()


def _receive(src: PubSubSource, n: int, timeout: float = 30.0) -> list:
    out, deadline = [], time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        out += src.receive(n - len(out), 0.2)
    assert len(out) == n, f"received {len(out)} of {n}"
    return out


def test_requeue_when_called_then_same_message_delivered_again(lane, make_source):
    (mid,) = lane.publish([b'{"client_order_id": "rq-1"}'])
    src = make_source()
    (first,) = _receive(src, 1)
    src.requeue(first, "PENDING")
    (again,) = _receive(src, 1)
    assert (first.msg_id, again.msg_id, again.payload) == (mid, mid, b'{"client_order_id": "rq-1"}')
    src.ack(again, {"status": "FILLED"})
    src.close()
    assert lane.leftover() == []


def test_dead_letter_when_dlq_publish_fails_then_message_requeued_not_acked(lane, make_source):
    lane.publish([b"garbage"])
    src = make_source(dlq_timeout_s=5)
    src.settings = Settings(src.settings.subscription, lane.emu.topic_path("no-such-topic"), window=10,
                            requeue_delay_s=0.2, dlq_timeout_s=5)
    (msg,) = _receive(src, 1)
    src.dead_letter(msg, "SCHEMA: not JSON", {"client_order_id": "!1", "status": "REJECTED"})
    (again,) = _receive(src, 1)  # not acked: Pub/Sub delivers it again
    assert (again.msg_id, again.payload) == (msg.msg_id, b"garbage")
    src.requeue(again, "test done")
    src.close()
    assert lane.dead_letters() == []


def test_close_when_deliveries_not_yet_received_then_handed_back_at_once(lane, make_source):
    lane.publish([f'{{"n": {i}}}'.encode() for i in range(5)])
    src = make_source()
    taken = _receive(src, 2)
    time.sleep(0.5)  # the other three wait in the local queue (flow control allows 10)
    for m in taken:
        src.ack(m, {"status": "FILLED"})
    src.close()
    # Nacked on close, so deliverable now: not after an ack deadline.
    left = lane.leftover()
    assert sorted(m.message.data for m in left) == sorted({f'{{"n": {i}}}'.encode() for i in range(5)}
                                                          - {m.payload for m in taken})
