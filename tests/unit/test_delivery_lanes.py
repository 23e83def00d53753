"""A destination's lane in a consume process: its request slots are handed out in arrival
order, never more than `max_concurrency` at once, also when the limit changes or a waiting
attempt is cancelled."""

from __future__ import annotations

import asyncio

from relayforge.destinations.worker import (
    QUICK_STARTED_AHEAD,
    QUICK_WAIT_SECONDS,
    STARTED_AHEAD,
    _Lane,
)
from relayforge.shares import Share


async def test_slots_never_exceed_the_limit_and_go_in_arrival_order():
    lane = _Lane(Share(), (2, None))
    order: list[int] = []
    most = 0

    async def request(n: int) -> None:
        nonlocal most
        await lane.slot(lane.ticket())
        order.append(n)
        most = max(most, lane.sending)
        await asyncio.sleep(0.01)
        lane.free()

    await asyncio.gather(*(request(n) for n in range(10)))
    assert most == 2
    assert order == list(range(10))
    assert lane.sending == 0 and not lane.senders and lane.turn == 10


async def test_a_lowered_limit_holds_back_until_the_requests_out_have_ended():
    lane = _Lane(Share(), (3, None))
    for _ in range(3):
        await lane.slot(lane.ticket())
    waiting = asyncio.ensure_future(lane.slot(lane.ticket()))
    await asyncio.sleep(0)
    lane.set_limits(1, None)
    lane.free()
    lane.free()
    await asyncio.sleep(0)
    assert not waiting.done() and lane.sending == 1  # 1 out: at the new limit
    lane.free()
    await asyncio.sleep(0)
    assert waiting.done() and lane.sending == 1


async def test_a_cancelled_waiter_is_passed_over_and_its_slot_not_lost():
    lane = _Lane(Share(), (1, None))
    await lane.slot(lane.ticket())
    cancelled = asyncio.ensure_future(lane.slot(lane.ticket()))
    after = asyncio.ensure_future(lane.slot(lane.ticket()))
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    lane.free()
    await asyncio.sleep(0)
    assert after.done() and lane.sending == 1
    lane.free()
    assert lane.sending == 0


async def test_a_waiter_cancelled_after_its_slot_was_handed_over_gives_it_back():
    lane = _Lane(Share(), (1, None))
    await lane.slot(lane.ticket())
    handed = asyncio.ensure_future(lane.slot(lane.ticket()))
    await asyncio.sleep(0)
    lane.free()  # the slot passes to `handed`, which is cancelled before it runs
    handed.cancel()
    await asyncio.gather(handed, return_exceptions=True)
    assert lane.sending == 0


def test_an_idle_lane_with_a_full_bucket_can_be_forgotten():
    lane = _Lane(Share(), (2, 5.0))
    assert lane.idle()
    assert lane.bucket is not None and lane.bucket.take() == 0.0
    assert not lane.idle()  # a token spent: forgetting it would reset the rate


async def test_slots_go_in_ticket_order_whatever_order_the_attempts_ask_in():
    """Attempts get tickets as they begin; their starts come back out of order (group commits
    run side by side), and the destination still sees them in ticket order."""
    lane = _Lane(Share(), (1, None))
    tickets = [lane.ticket() for _ in range(4)]
    order: list[int] = []

    async def request(ticket: int) -> None:
        await lane.slot(ticket)
        order.append(ticket)
        await asyncio.sleep(0)
        lane.free()

    later = [asyncio.ensure_future(request(t)) for t in reversed(tickets[1:])]
    await asyncio.sleep(0.01)
    assert order == [] and lane.sending == 0  # ticket 0 has not asked yet: nobody goes first
    await request(tickets[0])
    await asyncio.gather(*later)
    assert order == tickets


async def test_an_attempt_that_ends_without_a_request_passes_its_turn():
    lane = _Lane(Share(), (1, None))
    first, second, third = lane.ticket(), lane.ticket(), lane.ticket()
    waiting = asyncio.ensure_future(lane.slot(third))
    await asyncio.sleep(0)
    lane.pass_turn(second)  # e.g. its destination was disabled: no request
    await asyncio.sleep(0)
    assert not waiting.done()  # the first has neither sent nor passed
    lane.pass_turn(first)
    await asyncio.sleep(0)
    assert waiting.done() and lane.sending == 1 and lane.turn == 3 and not lane.passed


def test_a_lane_keeps_this_processs_share_of_the_destinations_limits():
    share = Share()
    lane = _Lane(share, (10, 20.0))
    assert (lane.max_concurrency, lane.bucket and lane.bucket.rate) == (10, 20.0)
    share.set(3, 0)  # two more consume processes: this one is first of three
    lane.set_limits(*lane.limits)  # (the worker does this for each lane on a change)
    assert lane.max_concurrency == 4 and lane.bucket is not None
    assert abs(lane.bucket.rate - 20 / 3) < 1e-9
    # slots are split exactly: 4 + 3 + 3 over the three processes
    assert [Share.of_slots(_at(3, r), 10) for r in range(3)] == [4, 3, 3]
    # a destination with fewer slots than processes: some hold none, and start nothing
    one = _Lane(_at(3, 2), (1, None))
    assert one.max_concurrency == 0 and not one.has_room()
    assert _Lane(_at(3, 0), (1, None)).has_room()


async def test_an_attempt_begun_before_the_share_fell_to_no_slot_still_goes_out():
    share = Share()
    lane = _Lane(share, (1, None))
    ticket = lane.ticket()  # begun (its start written) while this process had the slot
    share.set(3, 2)  # two more consume processes: this one's part of one slot is none
    lane.set_limits(*lane.limits)
    assert lane.max_concurrency == 0 and not lane.has_room()  # nothing new begins
    await asyncio.wait_for(lane.slot(ticket), 1)  # but this one is sent, not stranded


def _at(members: int, rank: int) -> Share:
    share = Share()
    share.set(members, rank)
    return share


def test_attempts_begin_ahead_of_their_slots_only_while_they_would_wait_little():
    fast, slow = _Lane(Share(), (10, None)), _Lane(Share(), (1, None))
    fast.typical_seconds, slow.typical_seconds = 0.005, 2.0  # a 5 ms and a 2 s destination
    fast.answered = slow.answered = True
    for lane in (fast, slow):
        lane.in_flight = lane.max_concurrency + STARTED_AHEAD - 1
        assert lane.has_room()  # always this far ahead
        lane.in_flight += 1
    # a burst to the fast one begins in its fan-out's insert; the slow one's would outwait
    # their leases, so they wait unstarted
    assert fast.has_room() and fast.wait_seconds() < QUICK_WAIT_SECONDS
    assert not slow.has_room()
    fast.in_flight = fast.max_concurrency + QUICK_STARTED_AHEAD
    assert not fast.has_room()  # and never beyond this


def test_a_destination_that_never_answered_gets_no_more_than_the_usual_started_ahead():
    """Until a request of its own has ended, a lane can't know it is quick: one that hangs from
    its first request must not have a burst's attempts started, waiting on their leases."""
    lane = _Lane(Share(), (10, None))
    lane.in_flight = lane.max_concurrency + STARTED_AHEAD
    assert lane.wait_seconds() < QUICK_WAIT_SECONDS  # what it would guess, unmeasured
    assert not lane.has_room()
    lane.answered = True  # its first answer came, and quickly
    assert lane.has_room()

