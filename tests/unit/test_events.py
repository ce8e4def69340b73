"""The event stream: every subscriber gets every event it accepts, in order, bounded."""

from __future__ import annotations

import asyncio

from nonstop.events import DeployEvent, DrainEvent, EventBus, HealthEvent, ReloadEvent, as_dict


def test_every_subscriber_gets_the_events_it_accepts_in_order() -> None:
    bus = EventBus()
    everything = bus.subscribe()
    health = bus.subscribe(lambda e: isinstance(e, HealthEvent))
    flip = HealthEvent("api", "127.0.0.1:9101", False, "refused")
    bus.publish(ReloadEvent(True))
    bus.publish(flip)
    assert everything.pending() == [ReloadEvent(True), flip]
    assert health.pending() == [flip]


def test_a_subscriber_that_falls_behind_loses_its_oldest_events_and_counts_them() -> None:
    bus = EventBus()
    slow = bus.subscribe(limit=3)
    for left in range(5):
        bus.publish(DrainEvent("web", ("127.0.0.1:8080",), left))
    assert [e.left for e in slow.pending()] == [2, 3, 4]  # type: ignore[union-attr]
    assert slow.dropped == 2


def test_a_closed_subscription_gets_nothing_more() -> None:
    bus = EventBus()
    with bus.subscribe() as gone:
        pass
    bus.publish(ReloadEvent(False, "bad"))
    assert gone.pending() == []


def test_a_reader_waits_for_the_next_event() -> None:
    async def scenario() -> list[object]:
        bus = EventBus()
        reader = bus.subscribe()
        got = asyncio.ensure_future(reader.get())
        await asyncio.sleep(0)
        assert not got.done()
        bus.publish(ReloadEvent(True))
        return [await got]

    assert asyncio.run(scenario()) == [ReloadEvent(True)]


def test_a_deploy_event_reads_as_the_admin_socket_has_always_sent_it() -> None:
    event = DeployEvent("web", 7, "drained", 1.25, "old release drained", (("in_flight", 0),))
    assert as_dict(event) == {
        "event": "drained",
        "app": "web",
        "t": 1.25,
        "message": "old release drained",
        "in_flight": 0,
    }
    assert as_dict(ReloadEvent(False, "bad")) == {"event": "reload", "ok": False, "error": "bad"}
