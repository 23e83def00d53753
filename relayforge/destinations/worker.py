"""The consumer's side of destinations: fan-out of a job's event, and delivery attempts.

Fan-out: when a job starts, every enabled destination of its tenant whose filter matches gets a
delivery (once per job and destination, whatever the attempt). The statement that starts the
job says whether its tenant has any enabled destination, so other tenants cost nothing more;
for those that do, their destinations are read then (a change counts from the next job on).

Lanes: the deliveries this process fans out are attempted here, without a message through the
broker: the insert itself begins the first attempt of those whose lane has room (leased, as a
start is), and claims the others until their turn; retries, and deliveries a process left
behind, come from the relay as messages. Either way a delivery waits in its destination's
lane: up to the destination's `max_concurrency` requests at once, no faster than its
`rate_limit_per_second`, the rest in arrival order. Waiting costs no round trip; the table is
still the record (a lease or a claim that lapses, or a message not acknowledged, brings a
delivery back after a crash). A lane takes in only what it can start well within the claim, and
holds only a bounded number of broker messages (the prefetch is shared by every destination):
the rest are deferred through the table, to be published when the lane should have room.

An attempt starts with one conditional transition, as for jobs, batched with the others of the
moment; it starts there only where the destination is enabled with its circuit closed. The
others go through the gate: a disabled destination dead-letters the delivery; an open circuit
defers it (the same attempt later, none spent) unless it is the probe. Then the signed POST goes
out, and the outcome and its log entry are written (batched too) before its message, if any,
is settled:

    2xx                  succeeded
    410 Gone             dead-lettered; the destination is disabled ("gone") and its waiting
                         deliveries dead-lettered with it
    429/503 Retry-After  retried no sooner than asked
    anything else        retried with backoff until max_attempts, then dead-lettered
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

import msgspec
import orjson
from opentelemetry import trace

from relayforge.batcher import GroupCommitBatcher
from relayforge.broker import IncomingMessage
from relayforge.db.pool import on_connection_error
from relayforge.deliveries import DeliveryStatus, Outcome
from relayforge.destinations.client import Answer, DeliveryClient
from relayforge.destinations.filters import EventFacts, EventFilter, compile_filter
from relayforge.destinations.requests import RequestBuilder
from relayforge.events import DomainEvent
from relayforge.ids import new_id
from relayforge.jobs import backoff_seconds
from relayforge.messages import DeliveryMessage, trace_carrier
from relayforge.observability import metrics, tracing
from relayforge.outcomes import MAX_ERROR_TEXT, OUTCOME_WRITERS, OutcomeWriter, settle
from relayforge.security.limits import TokenBucket
from relayforge.security.secrets import SecretCipher
from relayforge.settings import Settings
from relayforge.shares import Share
from relayforge.stores import Stores
from relayforge.stores.destinations import (
    FannedOut,
    FinishedAttempt,
    NewDelivery,
    StartedDelivery,
)
from relayforge.stores.jobs import StartedJob

log = logging.getLogger(__name__)

MAX_CACHED_FILTERS = 10_000
MAX_WAITING = 10_000  # deliveries waiting in one lane
MIN_DEFER_SECONDS, MAX_DEFER_SECONDS = 0.05, 30.0  # a broker message the lane can't hold
STARTED_AHEAD = 32  # attempts of a lane started beyond its request slots (doing database work)
# ... and more while the lane is quick: a burst's deliveries then begin in their fan-out's insert,
# not one statement later, yet none waits so long for a slot that its lease is at risk
QUICK_STARTED_AHEAD, QUICK_WAIT_SECONDS = 512, 2.0


class _FanOutDestination(msgspec.Struct, frozen=True):
    id: uuid.UUID
    filter: str  # JSON, as stored: the key of its compiled form
    max_concurrency: int | None
    rate_limit_per_second: float | None
    circuit: str
    paused: bool = False


_DESTINATIONS = msgspec.json.Decoder(list[_FanOutDestination])


@dataclass(slots=True, eq=False)
class _FanOut:
    """A job's new deliveries on their way through a batched insert; `made` once written."""

    job: StartedJob
    deliveries: list[NewDelivery]
    made: dict[uuid.UUID, FannedOut] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class _Start:
    """An attempt on its way through a batched start; `started` once started."""

    delivery_id: uuid.UUID
    attempt: int
    started: StartedDelivery | None = None


@dataclass(slots=True, eq=False)
class _Finish:
    """An attempt's outcome on its way through a batched write."""

    attempt: FinishedAttempt
    destination_id: uuid.UUID
    recovered: bool = False  # this success closed the destination's circuit


@dataclass(slots=True, eq=False)
class _Waiting:
    delivery_id: uuid.UUID
    attempt: int
    carrier: dict[str, str]
    message: IncomingMessage | None = None  # None: fanned out here, claimed in the table
    ticket: int = -1  # its place in its lane's order, given when its attempt begins
    began: float = 0.0  # when its attempt began (time.monotonic())
    left: bool = False  # its attempt no longer counts against the lane


class _Lane:
    """One destination's deliveries in this process: attempts under way, and those waiting.

    Only the request itself holds one of the destination's `max_concurrency` slots: an
    attempt's database work (its gate and start before, its outcome after) runs outside them,
    so the destination sees back-to-back requests, and up to STARTED_AHEAD more attempts are
    under way than it has slots (QUICK_STARTED_AHEAD while they would wait little, which only
    a destination that has answered can show: one that hangs from its first request gets no
    more than STARTED_AHEAD started attempts waiting on their leases). Slots go
    in the order attempts began (their tickets), not the order their starts came back (group
    commits run side by side): an attempt that ends without a request passes its turn on."""

    __slots__ = ("max_concurrency", "bucket", "waiting", "in_flight", "held", "typical_seconds",
                 "wake", "sending", "senders", "deferred_until", "issued", "turn", "passed",
                 "limits", "share", "answered")

    def __init__(self, share: Share, limits: tuple[int, float | None] | None) -> None:
        self.waiting: deque[_Waiting] = deque()
        self.in_flight = 0  # attempts under way
        self.held = 0  # waiting ones that hold a broker message
        self.typical_seconds = MIN_DEFER_SECONDS  # an attempt's duration lately
        self.answered = False  # an attempt's request has ended: typical_seconds is measured
        self.wake: asyncio.TimerHandle | None = None  # set while waiting for a rate token
        self.sending = 0  # requests out (slots taken)
        self.senders: dict[int, asyncio.Future[None]] = {}  # attempts waiting for a slot
        self.issued = 0  # tickets given
        self.turn = 0  # the first ticket whose turn has not passed
        self.passed: set[int] = set()  # later tickets whose turn has passed
        self.bucket: TokenBucket | None = None
        self.deferred_until = 0.0  # (monotonic) when the last delivery it deferred is due
        self.share = share
        self.limits: tuple[int, float | None] | None = None
        if limits is None:  # first seen through a message: one at a time until a start says
            self.max_concurrency = 1
        else:
            self.set_limits(*limits)

    def set_limits(self, max_concurrency: int, rate: float | None) -> None:
        """The destination's limits, per deployment: this process keeps its share of them
        (shares.py), which may be no slot at all when it has fewer slots than there are
        consume processes."""
        self.limits = (max_concurrency, rate)
        self.max_concurrency = self.share.of_slots(max_concurrency)
        rate = self.share.of_rate(rate) if rate else None
        if rate != (self.bucket.rate if self.bucket else None):
            self.bucket = TokenBucket(rate, max(1, int(rate))) if rate else None

    def _slots(self) -> int:
        """Request slots for attempts already begun: at least one, so that one begun before
        this process's share fell to no slot still goes out (no new one begins: has_room)."""
        return max(self.max_concurrency, 1)

    def has_room(self) -> bool:
        if self.max_concurrency == 0:
            return False
        ahead = self.in_flight - self.max_concurrency
        return ahead < STARTED_AHEAD or (self.answered and ahead < QUICK_STARTED_AHEAD
                                         and self.wait_seconds() < QUICK_WAIT_SECONDS)

    def ticket(self) -> int:
        self.issued += 1
        return self.issued - 1

    async def slot(self, ticket: int) -> None:
        """Wait for one of the destination's request slots, in ticket order."""
        if ticket == self.turn and self.sending < self._slots():
            self.sending += 1
            self.pass_turn(ticket)
            return
        turn = asyncio.get_running_loop().create_future()
        self.senders[ticket] = turn
        try:
            await turn  # a slot is handed over in turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # handed over, then cancelled: give back
                self.free()
            else:
                self.senders.pop(ticket, None)
                self.pass_turn(ticket)
            raise

    def pass_turn(self, ticket: int) -> None:
        """The ticket's turn is over (it took a slot, or ends without a request)."""
        if ticket >= self.turn:
            self.passed.add(ticket)
            self._hand_over()

    def free(self) -> None:
        self.sending -= 1
        self._hand_over()

    def _hand_over(self) -> None:
        """Move the turn past the tickets that had theirs; give free slots to those next."""
        while True:
            while self.turn in self.passed:
                self.passed.remove(self.turn)
                self.turn += 1
            turn = self.senders.get(self.turn)
            if turn is None or (self.sending >= self._slots() and not turn.done()):
                return
            del self.senders[self.turn]
            self.passed.add(self.turn)
            if not turn.done():  # (a cancelled waiter passes its turn without a slot)
                self.sending += 1
                turn.set_result(None)

    def wait_seconds(self) -> float:
        """About how long a delivery added now would wait for its attempt to start."""
        each = self.typical_seconds / max(self.max_concurrency, 1)
        if self.bucket is not None:
            each = max(each, 1 / self.bucket.rate)
        return (len(self.waiting) + self.in_flight) * each / 2

    def defer_seconds(self) -> float:
        """How long to defer a delivery the lane can't hold: about its wait, and never due
        before one deferred earlier, so that deferred deliveries come back in the order they
        came (a resumed destination's backlog goes out in order)."""
        now = time.monotonic()
        wait = min(MAX_DEFER_SECONDS, max(MIN_DEFER_SECONDS, self.wait_seconds()))
        self.deferred_until = max(now + wait, self.deferred_until + 0.001)
        return self.deferred_until - now

    def idle(self) -> bool:
        """Nothing waiting or under way and a full bucket: forgetting it loses nothing."""
        return (not self.waiting and self.in_flight == 0 and self.wake is None
                and (self.bucket is None or self.bucket.is_full(time.monotonic())))


class DeliveryWorker:
    def __init__(self, stores: Stores, settings: Settings, cipher: SecretCipher,
                 share: Share | None = None) -> None:
        self._stores = stores
        self._share = share or Share()
        self._share.on_change(self._reshare)
        self._settings = settings
        self._client = DeliveryClient(settings.destinations.allow_private_networks,
                                      settings.production)
        self._outcomes = OutcomeWriter(stores)
        self._lanes: dict[uuid.UUID, _Lane] = {}
        self._attempts: set[asyncio.Task[None]] = set()
        self._filters: dict[str, EventFilter] = {}  # compiled once per distinct filter
        self._requests = RequestBuilder(cipher)
        self._claim_seconds = float(settings.worker.lease_seconds)
        self._closing = False
        # Group commit, as for jobs: the fan-outs, starts and outcomes of the same moment are
        # written by one statement each.
        size = max(settings.worker.prefetch, 1)
        self._fan_outs = GroupCommitBatcher(self._fan_out_batch, max_size=size, writers=2)
        self._starts = GroupCommitBatcher(self._start_batch, max_size=size, writers=2)
        self._finishes = GroupCommitBatcher(self._finish_batch, max_size=size,
                                            writers=OUTCOME_WRITERS)

    async def start(self) -> None:
        await self._client.start()
        for batcher in (self._fan_outs, self._starts, self._finishes):
            batcher.start()

    async def close(self, grace_seconds: float) -> None:
        """Hand back what waits (messages to the broker, claims to the relay), then let the
        attempts in flight finish within the grace period."""
        self._closing = True
        await self._fan_outs.close()
        waiting: list[_Waiting] = []
        for lane in self._lanes.values():
            if lane.wake is not None:
                lane.wake.cancel()
            waiting += lane.waiting
            lane.waiting.clear()
        await self._hand_back(waiting)
        if self._attempts:
            _, pending = await asyncio.wait(self._attempts, timeout=grace_seconds)
            for task in pending:  # unfinished: their leases recover them
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._starts.close()
        await self._finishes.close()
        await self._client.close()

    async def _hand_back(self, waiting: list[_Waiting]) -> None:
        """Waiting deliveries this process won't send: messages to the broker, claims to the
        relay."""
        claimed = [w.delivery_id for w in waiting if w.message is None]
        try:
            for w in waiting:
                if w.message is not None:
                    await w.message.release()
            if claimed:
                await self._stores.deliveries.release(ids=claimed, delay_seconds=0.0)
        except Exception as exc:  # their claims lapse, their messages come back: none is lost
            log.warning("waiting deliveries not handed back", extra={"error": repr(exc)})

    def under_way(self) -> int:
        """Deliveries in hand: attempts under way and those waiting in lanes."""
        return len(self._attempts) + sum(len(lane.waiting) for lane in self._lanes.values())

    # ------------------------------------------------------------------------------ fan-out

    async def fan_out(self, job: StartedJob, event: DomainEvent, carrier: dict[str, str]) -> int:
        """Create the deliveries of a job's event; those whose lane has room start at once (the
        insert begins their first attempt), the others wait in their lanes if they will start
        well within their claim, else are left to the relay. How many were new."""
        if job.destinations is None:
            return 0
        facts = EventFacts(job.source, event.event_type, event.data)
        default = self._settings.destinations.max_concurrency
        carried = tracing.carry(carrier)
        headers = orjson.dumps({**carried, "correlation_id": job.correlation_id}).decode()
        fan = _FanOut(job, [])
        for d in _DESTINATIONS.decode(job.destinations):
            if self._filter(d.filter).matches(facts):
                lane = self._lane(d.id, (d.max_concurrency or default, d.rate_limit_per_second))
                take = "left" if d.paused else self._take(lane, d.circuit)  # held in the table
                fan.deliveries.append(NewDelivery(new_id(), job.id, d.id, job.tenant_id,
                                                  headers, take))
        if not fan.deliveries:
            return 0
        try:
            await self._fan_outs.submit(fan)
        finally:
            for x in fan.deliveries:  # a start reserved and not made gives its place back
                lane = self._lane(x.destination_id)
                made = fan.made.get(x.id)
                if x.take == "started" and (made is None or made.started is None):
                    lane.in_flight -= 1
                if made is not None and made.started is not None:
                    self._launch(x.destination_id, lane, _Waiting(x.id, 1, carried),
                                 made.started)
                elif made is not None and made.claimed:
                    self._enqueue(x.destination_id, _Waiting(x.id, 1, carried))
                else:
                    self._pump(x.destination_id, lane)
                    self._forget_if_idle(x.destination_id, lane)
        return len(fan.made)

    def _take(self, lane: _Lane, circuit: str) -> str:
        """What the consumer does with a new delivery to this lane: "started" (it has room
        now, and its start is reserved), "claimed" (it waits its turn here) or "left"."""
        if self._closing or lane.max_concurrency == 0:  # none of its slots are this process's
            return "left"
        if (circuit == "closed" and not lane.waiting and lane.has_room() and lane.wake is None
                and (lane.bucket is None or not lane.bucket.take())):
            lane.in_flight += 1
            return "started"
        if len(lane.waiting) < MAX_WAITING and lane.wait_seconds() < self._claim_seconds / 4:
            return "claimed"
        return "left"

    async def _fan_out_batch(self, batch: list[_FanOut]) -> None:
        """The deliveries of the jobs started at the same moment, in one statement."""
        made = {f.id: f for f in await self._stores.deliveries.fan_out(
            deliveries=[d for fan in batch for d in fan.deliveries],
            jobs={fan.job.id: fan.job for fan in batch},
            max_attempts=self._settings.worker.max_attempts, claim_seconds=self._claim_seconds)}
        for fan in batch:
            fan.made = {d.id: made[d.id] for d in fan.deliveries if d.id in made}

    def _filter(self, spec: str) -> EventFilter:
        cached = self._filters.get(spec)
        if cached is None:
            if len(self._filters) > MAX_CACHED_FILTERS:
                self._filters.clear()
            cached = self._filters[spec] = compile_filter(orjson.loads(spec))
        return cached

    # -------------------------------------------------------------------------------- lanes

    async def handle(self, message: IncomingMessage, m: DeliveryMessage) -> None:
        """A delivery message from the relay: into its lane, or deferred when the lane holds
        enough messages already. Returns at once; the lane settles the message."""
        lane = self._lanes.get(m.destination_id)
        held = max(self._settings.destinations.max_concurrency,
                   lane.max_concurrency if lane else 0)
        if self._closing or (lane is not None and (lane.held >= held
                                                   or lane.max_concurrency == 0)):
            seconds = lane.defer_seconds() if lane is not None else 0.0
            await self._defer(m.delivery_id, m.attempt, seconds)
            await message.ack()
            return
        self._enqueue(m.destination_id,
                      _Waiting(m.delivery_id, m.attempt, trace_carrier(message.headers), message))

    def _lane(self, destination_id: uuid.UUID,
              limits: tuple[int, float | None] | None = None) -> _Lane:
        """A destination's lane, with its limits when known (a lane first seen through a
        message starts one attempt at a time until its first start gives them)."""
        lane = self._lanes.get(destination_id)
        if lane is None:
            lane = self._lanes[destination_id] = _Lane(self._share, limits)
        elif limits is not None:
            lane.set_limits(*limits)
        return lane

    def _reshare(self) -> None:
        """Consume processes came or went: every lane takes its new share, and a lane left
        without a slot hands back what waits in it (another process will send it)."""
        for destination_id, lane in list(self._lanes.items()):
            if lane.limits is None:
                continue
            lane.set_limits(*lane.limits)
            if lane.max_concurrency == 0 and lane.waiting:
                waiting = list(lane.waiting)
                lane.waiting.clear()
                lane.held = 0
                task = asyncio.create_task(self._hand_back(waiting))
                self._attempts.add(task)
                task.add_done_callback(self._attempts.discard)
            else:
                self._pump(destination_id, lane)

    def _enqueue(self, destination_id: uuid.UUID, w: _Waiting) -> None:
        lane = self._lane(destination_id)
        lane.waiting.append(w)
        if w.message is not None:
            lane.held += 1
        self._pump(destination_id, lane)

    def _forget_if_idle(self, destination_id: uuid.UUID, lane: _Lane) -> None:
        if lane.idle() and self._lanes.get(destination_id) is lane:
            del self._lanes[destination_id]

    def _pump(self, destination_id: uuid.UUID, lane: _Lane) -> None:
        """Start waiting attempts while the lane's concurrency and rate allow."""
        while lane.waiting and lane.has_room() and not self._closing:
            if lane.bucket is not None and lane.wake is None:
                wait = lane.bucket.take()
                if wait:
                    lane.wake = asyncio.get_running_loop().call_later(
                        wait, self._woken, destination_id, lane)
                    return
            elif lane.wake is not None:
                return
            w = lane.waiting.popleft()
            if w.message is not None:
                lane.held -= 1
            lane.in_flight += 1
            self._launch(destination_id, lane, w)

    def _launch(self, destination_id: uuid.UUID, lane: _Lane, w: _Waiting,
                started: StartedDelivery | None = None) -> None:
        """An attempt under way (counted in the lane's in_flight by the caller)."""
        w.ticket = lane.ticket()
        task = asyncio.create_task(self._run(destination_id, lane, w, started))
        self._attempts.add(task)
        task.add_done_callback(self._attempts.discard)

    def _woken(self, destination_id: uuid.UUID, lane: _Lane) -> None:
        lane.wake = None
        self._pump(destination_id, lane)

    async def _run(self, destination_id: uuid.UUID, lane: _Lane, w: _Waiting,
                   started: StartedDelivery | None) -> None:
        w.began = time.monotonic()
        try:
            await self._deliver(destination_id, lane, w, started)
        except Exception as exc:  # database gone mid-attempt: a lease or a claim brings it back
            await on_connection_error(self._stores.db, exc)
            log.exception("delivery attempt failed; released", extra={
                "delivery_id": str(w.delivery_id)})
            if w.message is not None:
                await settle(w.message.release)
        finally:
            self._leave(destination_id, lane, w)
            self._forget_if_idle(destination_id, lane)

    def _leave(self, destination_id: uuid.UUID, lane: _Lane, w: _Waiting) -> None:
        """The attempt stops counting against its lane once its request is over (its outcome
        is written beside the next ones): the next may start."""
        if w.left:
            return
        w.left = True
        lane.pass_turn(w.ticket)
        lane.in_flight -= 1
        lane.typical_seconds = 0.8 * lane.typical_seconds + 0.2 * (time.monotonic() - w.began)
        lane.answered = True
        self._pump(destination_id, lane)

    async def _defer(self, delivery_id: uuid.UUID, attempt: int, seconds: float) -> None:
        """The same attempt later, through the table and the relay, none spent."""
        seconds = min(MAX_DEFER_SECONDS, max(MIN_DEFER_SECONDS, seconds))
        await self._stores.deliveries.defer(
            delivery_id=delivery_id, attempt=attempt,
            until=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds))
        metrics.child(metrics.DELIVERIES, "deferred").inc()

    # ------------------------------------------------------------------------------ attempt

    async def _deliver(self, destination_id: uuid.UUID, lane: _Lane, w: _Waiting,
                       started: StartedDelivery | None) -> None:
        if started is None:
            start = _Start(w.delivery_id, w.attempt)
            await self._starts.submit(start)  # enabled, circuit closed: no gate needed
            started = start.started or await self._through_gate(destination_id, w)
            if started is None:
                return
        lane.set_limits(started.max_concurrency or self._settings.destinations.max_concurrency,
                        started.rate_limit_per_second)
        if not tracing.recording():
            await self._send_and_record(lane, w, started)
            return
        with tracing.tracer.start_as_current_span(
            "deliver", context=tracing.extract(w.carrier), kind=trace.SpanKind.CLIENT,
            attributes={"relayforge.delivery_id": str(started.id),
                        "relayforge.attempt": started.attempts,
                        "relayforge.destination_id": str(destination_id)},
        ) as span:
            answer = await self._send_and_record(lane, w, started)
            span.set_attribute("http.response.status_code", answer.status or 0)

    async def _through_gate(self, destination_id: uuid.UUID, w: _Waiting
                            ) -> StartedDelivery | None:
        """A delivery the common start left (destination disabled, paused or deleted,
        circuit open, or the attempt stale): started if the gate lets it (an open circuit's
        probe), else settled here."""
        s = self._settings.destinations
        gate = await self._stores.destinations.gate(
            destination_id=destination_id, probe_seconds=s.circuit_probe_seconds,
            attempt=w.attempt)
        if gate is None:  # the destination was deleted, and its deliveries with it
            await self._settle(w, dead=False)
            return None
        if not gate.enabled:
            if await self._stores.deliveries.refuse(
                    delivery_id=w.delivery_id, attempt=w.attempt,
                    reason=f"destination disabled: {gate.disabled_reason or 'by an admin'}"):
                metrics.child(metrics.DELIVERIES, DeliveryStatus.DEAD_LETTERED).inc()
            await self._settle(w, dead=True)
            return None
        if gate.paused:  # the same attempt waits in the table for the resume
            await self._stores.deliveries.hold(delivery_id=w.delivery_id, attempt=w.attempt)
            await self._settle(w, dead=False)
            return None
        if gate.circuit == "open" and not gate.probe:
            assert gate.wait_until is not None
            await self._defer(w.delivery_id, w.attempt,
                              (gate.wait_until - dt.datetime.now(dt.UTC)).total_seconds())
            await self._settle(w, dead=False)
            return None
        started = await self._stores.deliveries.start_many(
            attempts=[(w.delivery_id, w.attempt)], closed_only=False,
            lease_seconds=float(self._settings.worker.lease_seconds))
        if not started:  # a duplicate or late message: the delivery has moved on
            await self._settle(w, dead=False)
            return None
        return started[0]

    async def _start_batch(self, batch: list[_Start]) -> None:
        started = await self._stores.deliveries.start_many(
            attempts=[(x.delivery_id, x.attempt) for x in batch], closed_only=True,
            lease_seconds=float(self._settings.worker.lease_seconds))
        by_attempt = {(d.id, d.attempts): d for d in started}
        for x in batch:
            x.started = by_attempt.pop((x.delivery_id, x.attempt), None)

    async def _finish_batch(self, batch: list[_Finish]) -> None:
        recovered = await self._stores.deliveries.finish_many(
            [x.attempt for x in batch], event_attempts=self._settings.worker.max_attempts)
        for x in batch:
            x.recovered = x.destination_id in recovered

    @staticmethod
    async def _settle(w: _Waiting, dead: bool) -> None:
        """A broker message's end, once what it decided is written (a fanned-out delivery
        has none: its row is all there is)."""
        if w.message is not None:
            await settle(w.message.dead_letter if dead else w.message.ack)

    async def _send_and_record(self, lane: _Lane, w: _Waiting, d: StartedDelivery
                               ) -> Answer:
        started_at = dt.datetime.now(dt.UTC)
        request = self._requests.build(d, w.carrier)
        if isinstance(request, str):  # nothing to send: no retry can help
            answer = Answer(None, request, None, 0.0, None)
        else:
            url, body, headers = request
            await lane.slot(w.ticket)
            try:
                answer = await self._client.post(url, body, headers, d.timeout_ms)
            finally:
                lane.free()
                self._leave(d.destination_id, lane, w)
            metrics.DELIVERY_DURATION.observe(answer.duration_ms / 1000)
        outcome = self._outcome(d, answer, permanent=isinstance(request, str))

        finish = _Finish(FinishedAttempt(
            d.id, d.attempts, outcome, started_at, answer.duration_ms, answer.status,
            answer.body), d.destination_id)
        if outcome.status != DeliveryStatus.SUCCEEDED:  # first: whoever sees this outcome
            await self._outcomes.write(  # sees the destination's
                lambda: self._update_destination(d, answer))
        await self._outcomes.write(lambda: self._finishes.submit(finish))
        if finish.recovered:
            log.info("destination recovered; circuit closed",
                     extra={"destination_id": str(d.destination_id)})
        metrics.child(metrics.DELIVERIES, outcome.status).inc()
        dead = outcome.status == DeliveryStatus.DEAD_LETTERED
        if dead:
            metrics.DLQ_MESSAGES.inc()
            log.warning("delivery dead-lettered", extra={
                "delivery_id": str(d.id), "attempt": d.attempts, "error": outcome.error})
        await self._settle(w, dead)
        return answer

    def _outcome(self, d: StartedDelivery, answer: Answer, permanent: bool) -> Outcome:
        if answer.succeeded:
            return Outcome(DeliveryStatus.SUCCEEDED)
        error = answer.error or f"HTTP {answer.status}"
        if answer.status == 410:
            return Outcome(DeliveryStatus.DEAD_LETTERED,
                           "the destination answered 410 Gone; it is disabled")
        if permanent or d.attempts >= d.max_attempts:
            return Outcome(DeliveryStatus.DEAD_LETTERED, error[:MAX_ERROR_TEXT])
        w = self._settings.worker
        delay = backoff_seconds(d.attempts, w.backoff_base_ms, w.backoff_max_ms)
        if answer.status in (429, 503) and answer.retry_after is not None:
            delay = max(delay, answer.retry_after)
        return Outcome(DeliveryStatus.RETRYING, error[:MAX_ERROR_TEXT], delay)

    async def _update_destination(self, d: StartedDelivery, answer: Answer) -> None:
        """After a failed attempt: 410 disables; else one more consecutive failure."""
        destinations = self._stores.destinations
        s = self._settings.destinations
        if answer.status == 410:
            waiting = await destinations.disable(destination_id=d.destination_id, reason="gone",
                                                 event_attempts=self._settings.worker.max_attempts)
            log.warning("destination answered 410 Gone: disabled", extra={
                "destination_id": str(d.destination_id), "dead_lettered": waiting})
            return
        failed = await destinations.failed(
            destination_id=d.destination_id, open_after=s.circuit_failures,
            probe_seconds=s.circuit_probe_seconds, disable_after_hours=s.disable_after_hours,
            event_attempts=self._settings.worker.max_attempts)
        if failed is None:
            return
        if failed.failing_too_long:
            waiting = await destinations.disable(destination_id=d.destination_id,
                                                 reason="failing",
                                                 event_attempts=self._settings.worker.max_attempts)
            log.warning("destination failing too long: disabled", extra={
                "destination_id": str(d.destination_id), "dead_lettered": waiting})
        elif failed.circuit == "open" and failed.consecutive_failures == s.circuit_failures:
            log.warning("destination circuit opened", extra={
                "destination_id": str(d.destination_id),
                "consecutive_failures": failed.consecutive_failures})
