"""Faults: kill -9 of the consumer mid-job and of the relay mid-batch (real child processes), and
RabbitMQ closing the connections from the server side. Every accepted webhook must end in
exactly one terminal job, none lost, none run to success twice."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid

import aio_pika
import aiohttp
import asyncpg
import httpx
import orjson
import pytest

from tests.e2e.pipeline_support import (
    FAST,
    amqp_env,
    counter,
    delete_topology,
    send,
    wait_for_jobs,
    wait_for_shares,
)
from tests.e2e.receiver import Receiver
from tests.handlers import WITNESS
from tests.support import ADMIN_KEY, amqp_url, new_tenant, sign_generic

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}

pytestmark = pytest.mark.faults

RECORDING = {"WORKER__HANDLERS": "generic=tests.handlers:recording"}
SHORT_LEASE = {"WORKER__LEASE_SECONDS": "3", "WORKER__JOB_TIMEOUT_SECONDS": "2"}


@pytest.fixture
async def database(fresh_database):
    url = fresh_database()
    conn = await asyncpg.connect(url)
    await conn.execute("CREATE TABLE handler_runs (job_id uuid NOT NULL, attempt int NOT NULL, "
                       "finished_at timestamptz NOT NULL DEFAULT clock_timestamp())")
    await conn.close()
    return url


@pytest.fixture
async def names():
    prefix = f"rft.fault.{uuid.uuid4().hex[:8]}"
    yield amqp_env(prefix)
    await delete_topology(prefix)


async def assert_each_ran_to_success_once(database: str,
                                          job_ids: list[str]) -> list[asyncpg.Record]:
    rows = await wait_for_jobs(database, job_ids, timeout=90)
    assert {r["status"] for r in rows} == {"succeeded"}
    conn = await asyncpg.connect(database)
    runs = await conn.fetch("SELECT job_id, array_agg(attempt ORDER BY attempt) AS attempts "
                            "FROM handler_runs GROUP BY job_id")
    await conn.close()
    counts = {str(r["job_id"]): r["attempts"] for r in runs}
    assert sorted(counts) == sorted(job_ids), "a job succeeded without its handler finishing"
    twice = {job: attempts for job, attempts in counts.items() if len(attempts) > 1}
    assert not twice, f"handlers ran to the end more than once (job: attempts): {twice}"
    return rows


async def wait_until(database: str, sql: str, timeout: float = 30) -> None:
    conn = await asyncpg.connect(database)
    try:
        for _ in range(int(timeout * 20)):
            if await conn.fetchval(sql):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out waiting for: {sql}")
    finally:
        await conn.close()


async def test_consumer_killed_mid_job_recovers_every_job(client, start_server, database, names):
    env = {**names, **FAST, **RECORDING, **SHORT_LEASE, "TEST_HANDLER_SLEEP": "1.0",
           "WORKER__CONCURRENCY": "8", "WORKER__PREFETCH": "8"}
    ingest = start_server("ingest", database_url=database, **FAST)
    start_server("relay", database_url=database, **env)
    consumer = start_server("consume", database_url=database, **env)
    docs = [await send(client, ingest) for _ in range(20)]
    await wait_until(database, "SELECT count(*) >= 4 FROM jobs WHERE status = 'processing'")
    consumer.kill()  # SIGKILL: no shutdown, handlers die mid-sleep
    start_server("consume", database_url=database, **env)
    rows = await assert_each_ran_to_success_once(database, [d["job_id"] for d in docs])
    recovered = [r for r in rows if r["attempts"] > 1]
    assert recovered, "no job was in flight when the consumer died"


async def test_a_process_killed_with_jobs_begun_at_ingest_recovers_every_job(
        client, start_server, database, names):
    """Mode `all` begins new jobs in the statement that records them, with no message: killed
    while running them, their leases bring them back, and each runs to success once."""
    env = {**names, **FAST, **RECORDING, **SHORT_LEASE, "TEST_HANDLER_SLEEP": "1.0",
           "WORKER__CONCURRENCY": "8"}
    server = start_server("all", database_url=database, **env)
    docs = [await send(client, server) for _ in range(12)]
    await wait_until(database, "SELECT count(*) >= 4 FROM jobs WHERE status = 'processing'")
    begun = [line for line in (await client.get(f"{server.url}/metrics")).text.splitlines()
             if line.startswith("jobs_begun_at_ingest_total ")]
    assert begun and float(begun[0].split()[1]) >= 1, begun
    server.kill()  # SIGKILL: the jobs it began die mid-handler, with no message anywhere
    start_server("all", database_url=database, **env)
    rows = await assert_each_ran_to_success_once(database, [d["job_id"] for d in docs])
    assert [r for r in rows if r["attempts"] > 1], "no job was in flight when the process died"


async def test_a_killed_consumer_repeats_only_the_handlers_it_had_in_flight(
        client, start_server, database, names):
    """The documented window: a handler runs to the end again only if its process died
    between the handler's start and its outcome's commit, and no handler starts while an
    outcome older than WORKER__MAX_OUTCOME_LAG_MS is unwritten. So a kill repeats at most
    WORKER__CONCURRENCY handlers, each one that was running or had just finished. Counted
    here with the jobs table locked for a second before the kill (and the process's database
    connections dying with it), so the handlers that finish meanwhile can't record their
    outcomes: exactly those run again, and no others."""
    lag_ms, concurrency = 500, 16
    env = {**names, **FAST, **RECORDING, **SHORT_LEASE, "TEST_HANDLER_SLEEP": "0.2",
           "WORKER__CONCURRENCY": str(concurrency), "WORKER__PREFETCH": str(concurrency),
           "WORKER__MAX_OUTCOME_LAG_MS": str(lag_ms)}
    ingest = start_server("ingest", database_url=database, **FAST)
    start_server("relay", database_url=database, **env)
    consumer = start_server("consume", database_url=database, **env)
    docs = [await send(client, ingest) for _ in range(300)]
    await wait_until(database, "SELECT count(*) >= 20 FROM handler_runs")
    await wait_until(database, "SELECT count(*) >= 4 FROM jobs WHERE status = 'processing'")
    conn = await asyncpg.connect(database)
    locked = conn.transaction()
    await locked.start()
    await conn.execute("LOCK TABLE jobs IN EXCLUSIVE MODE")  # reads go on; outcomes wait
    await asyncio.sleep(1.0)  # the handlers in hand finish; their outcomes can't be written
    killed_at = await conn.fetchval("SELECT clock_timestamp()")
    consumer.kill()
    # its connections die with it, as a lost machine's do (PostgreSQL would otherwise finish
    # a statement the dead process had sent, once the lock is gone)
    await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    await locked.rollback()
    start_server("consume", database_url=database, **env)
    await wait_for_jobs(database, [d["job_id"] for d in docs], ("succeeded",), timeout=90)
    runs = await conn.fetch("SELECT job_id, array_agg(finished_at ORDER BY finished_at) AS at "
                            "FROM handler_runs GROUP BY job_id HAVING count(*) > 1")
    await conn.close()
    print(f"{len(runs)} of {len(docs)} handlers ran to the end twice after the kill")
    assert 1 <= len(runs) <= concurrency, runs  # the ones in flight, and never more
    for run in runs:  # the first run had just finished: in flight, its outcome not yet written
        first = run["at"][0]
        assert first <= killed_at, run
        assert (killed_at - first).total_seconds() < 1.0 + lag_ms / 1000, run


async def test_relay_killed_mid_batch_loses_and_doubles_nothing(client, start_server, database,
                                                                names):
    relay_env = {**names, **FAST, "RELAY__BATCH_SIZE": "5", "RELAY__CLAIM_TIMEOUT_SECONDS": "2"}
    ingest = start_server("ingest", database_url=database, **FAST)
    start_server("consume", database_url=database, **names, **FAST, **RECORDING)
    docs = [await send(client, ingest) for _ in range(150)]
    relay = start_server("relay", database_url=database, **relay_env)
    await wait_until(database, "SELECT count(*) > 0 FROM jobs WHERE message_due_at IS NULL")
    relay.kill()
    conn = await asyncpg.connect(database)
    left = await conn.fetchval("SELECT count(*) FROM jobs WHERE message_due_at IS NOT NULL")
    await conn.close()
    assert left > 0, "the relay finished before it could be killed"
    start_server("relay", database_url=database, **relay_env)
    await assert_each_ran_to_success_once(database, [d["job_id"] for d in docs])


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl on this machine")
async def test_broker_closing_connections_loses_nothing(client, start_server, database, names):
    """Every job through the broker (none begins at ingest), whose connections are closed
    three times under way; the process is ready again once it has reconnected."""
    server = start_server("all", database_url=database, **names, **FAST, **RECORDING,
                          **SHORT_LEASE, WORKER__BEGIN_AT_INGEST="false")
    docs = []
    for _ in range(3):
        docs += [await send(client, server) for _ in range(30)]
        subprocess.run(["rabbitmqctl", "close_all_connections", "relayforge fault test"],
                       check=True, capture_output=True, timeout=60)
    docs += [await send(client, server) for _ in range(30)]
    await assert_each_ran_to_success_once(database, [d["job_id"] for d in docs])
    deadline = time.monotonic() + 30
    while (ready := await client.get(f"{server.url}/readyz")).status_code != 200:
        assert time.monotonic() < deadline, ready.text
        await asyncio.sleep(0.2)


async def test_sigterm_lets_jobs_in_hand_finish(client, start_server, database, names):
    env = {**names, **FAST, **RECORDING, "TEST_HANDLER_SLEEP": "1.0", "WORKER__CONCURRENCY": "4",
           "WORKER__PREFETCH": "4", "LOG__LEVEL": "INFO"}
    ingest = start_server("ingest", database_url=database, **FAST)
    start_server("relay", database_url=database, **env)
    consumer = start_server("consume", database_url=database, **env)
    docs = [await send(client, ingest) for _ in range(12)]
    await wait_until(database, "SELECT count(*) >= 2 FROM jobs WHERE status = 'processing'")
    consumer.stop()  # SIGTERM: stop taking messages, finish the ones in hand
    conn = await asyncpg.connect(database)
    in_hand = await conn.fetchval("SELECT count(*) FROM jobs WHERE status = 'processing'")
    finished = await conn.fetchval("SELECT count(*) FROM handler_runs")
    await conn.close()
    assert in_hand == 0, "a job was left processing by a graceful stop"
    assert finished >= 2
    [draining] = [orjson.loads(line) for line in consumer.log().splitlines()
                  if '"message":"draining"' in line]
    assert draining["jobs"] >= 2 and draining["grace_seconds"] > 0, draining
    start_server("consume", database_url=database, **env)
    rows = await assert_each_ran_to_success_once(database, [d["job_id"] for d in docs])
    assert all(r["attempts"] == 1 for r in rows)  # nothing needed a lease recovery


async def test_handler_exceeding_the_job_timeout_is_retried_then_dead_lettered(
        client, start_server, database, names):
    server = start_server("all", database_url=database, **names, **FAST, **RECORDING,
                          TEST_HANDLER_SLEEP="2", WORKER__JOB_TIMEOUT_SECONDS="0.3",
                          WORKER__MAX_ATTEMPTS="2")
    doc = await send(client, server)
    [job] = await wait_for_jobs(database, [doc["job_id"]])
    assert (job["status"], job["attempts"], job["last_error"]) == (
        "dead_lettered", 2, "handler timed out")


async def test_two_relays_never_publish_a_row_twice(client, start_server, database, names):
    ingest = start_server("ingest", database_url=database, **FAST)
    start_server("consume", database_url=database, **names, **FAST, **RECORDING)
    docs = [await send(client, ingest) for _ in range(100)]
    relays = [start_server("relay", database_url=database, **names, **FAST,
                           RELAY__BATCH_SIZE="10") for _ in range(2)]
    docs += [await send(client, ingest) for _ in range(100)]
    await assert_each_ran_to_success_once(database, [d["job_id"] for d in docs])
    published = [counter((await client.get(f"{r.url}/metrics")).text, "outbox_published_total")
                 for r in relays]
    assert sum(published) == 200 and min(published) > 0, published  # both took part


async def test_database_connections_killed_lose_nothing(client, start_server, database, names):
    # A lease of a few seconds covers the one ambiguous case (a job_start whose commit reply was
    # lost); an outcome lost after the handler ran would show as a second handler run.
    ingest = start_server("ingest", database_url=database, **FAST)
    start_server("relay", database_url=database, **names, **FAST)
    start_server("consume", database_url=database, **names, **FAST, **RECORDING,
                 WORKER__LEASE_SECONDS="8", WORKER__JOB_TIMEOUT_SECONDS="2")
    accepted, unavailable = [], 0
    admin = await asyncpg.connect(database)
    for _ in range(4):
        for _ in range(25):
            body = orjson.dumps({"event": "db.fault", "data": uuid.uuid4().hex})
            r = await client.post(f"{ingest.url}/webhooks/generic", content=body,
                                  headers={"X-Signature": sign_generic(body)})
            if r.status_code == 202:
                accepted.append(r.json()["job_id"])
            else:
                assert r.status_code == 503, r.text  # nothing recorded: the provider retries
                unavailable += 1
        # every connection of the relay, consumer and ingest processes, all at once
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND application_name <> $1", WITNESS)
    await admin.close()
    assert len(accepted) >= 50
    await assert_each_ran_to_success_once(database, accepted)


async def test_a_purged_queue_strands_no_job(client, start_server, database, names):
    """Messages lost by the broker (here: the jobs queue purged under load) are published again
    once their job has been `queued` for RELAY__QUEUED_TIMEOUT_SECONDS; every job succeeds,
    each handler runs to the end once."""
    ingest = start_server("ingest", database_url=database, **FAST)
    start_server("relay", database_url=database, **names, **FAST,
                 RELAY__QUEUED_TIMEOUT_SECONDS="2")
    docs = list(await asyncio.gather(*(send(client, ingest) for _ in range(40))))
    await wait_until(database, "SELECT count(*) = 40 FROM jobs WHERE status = 'queued'")
    connection = await aio_pika.connect(amqp_url())
    async with connection:
        channel = await connection.channel()
        purged = await (await channel.get_queue(names["AMQP__QUEUE"])).purge()
    assert purged.message_count == 40
    docs += await asyncio.gather(*(send(client, ingest) for _ in range(40)))
    start_server("consume", database_url=database, **names, **FAST, **RECORDING)
    rows = await assert_each_ran_to_success_once(database, [d["job_id"] for d in docs])
    assert all(r["attempts"] == 1 for r in rows)


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl on this machine")
async def test_a_dropped_consumer_connection_lets_running_handlers_finish(
        client, start_server, database, names):
    """Only the consumer's connection is closed while handlers run: they finish and record
    their outcome (no lease recovery, no second run); the redelivered messages are dropped."""
    env = {**names, **FAST, **RECORDING, "TEST_HANDLER_SLEEP": "1.5", "WORKER__CONCURRENCY": "8",
           "WORKER__PREFETCH": "8"}
    ingest = start_server("ingest", database_url=database, **FAST)
    start_server("relay", database_url=database, **env)
    consumer = start_server("consume", database_url=database, **env)
    docs = [await send(client, ingest) for _ in range(16)]
    await wait_until(database, "SELECT count(*) >= 4 FROM jobs WHERE status = 'processing'")
    listed = subprocess.run(["rabbitmqctl", "list_connections", "-q", "pid", "client_properties"],
                            check=True, capture_output=True, text=True, timeout=60).stdout
    pids = [line.split("\t")[0] for line in listed.splitlines()
            if f'"relayforge consume {names["AMQP__QUEUE"]}"' in line]
    assert pids, listed
    for pid in pids:
        subprocess.run(["rabbitmqctl", "close_connection", pid, "relayforge test"], check=True,
                       capture_output=True, timeout=60)
    rows = await assert_each_ran_to_success_once(database, [d["job_id"] for d in docs])
    assert all(r["attempts"] == 1 for r in rows), "a handler in hand was cut off"
    assert "broker connection lost while a job ran" in consumer.log()


async def test_the_dlq_keeps_the_newest_messages_up_to_its_bound(client, start_server, names):
    server = start_server("all", **names, **FAST, AMQP__DLQ_MAX_LENGTH="3")
    docs = [await send(client, server, force_permanent_fail=True) for _ in range(6)]
    await wait_for_jobs(server.database_url, [d["job_id"] for d in docs],
                        statuses=("dead_lettered",))
    connection = await aio_pika.connect(amqp_url())
    async with connection:
        channel = await connection.channel()
        dlq = await channel.declare_queue(names["AMQP__DLQ"], passive=True)
        assert dlq.declaration_result.message_count == 3


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl on this machine")
async def test_two_of_each_process_lose_and_double_nothing_and_keep_their_limits(
        start_server, database, names):
    """A deployment of 2 ingest, 2 relay and 2 consume processes on one database and vhost,
    under a steady signed stream to both ingest processes: kill -9 of one of each, a SIGTERM,
    every database connection cut, every broker connection closed. Every accepted webhook's job
    succeeds with its handler run once, its delivery arrives, and the tenant's rate limit and
    the destination's rate hold for the deployment, not per process."""
    tenant_rate, destination_rate, offered, seconds = 30, 20, 45, 12
    env = {**names, **FAST, **RECORDING, **SHORT_LEASE, "TEST_HANDLER_SLEEP": "0.05",
           "DESTINATIONS__ALLOW_PRIVATE_NETWORKS": "true",
           "HARDENING__TENANT_RATE_LIMIT_PER_SECOND": str(tenant_rate),
           "HARDENING__TENANT_RATE_LIMIT_BURST": str(tenant_rate)}
    ingests = [start_server("ingest", database_url=database, **env) for _ in range(2)]
    relays = [start_server("relay", database_url=database, **env) for _ in range(2)]
    consumers = [start_server("consume", database_url=database, **env) for _ in range(2)]
    receiver = await Receiver().start()
    tenant = new_tenant()
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            made = await client.post(
                f"{ingests[0].url}/admin/tenants/{tenant}/destinations", headers=ADMIN,
                json={"url": f"{receiver.url}/hooks", "rate_limit_per_second": destination_rate})
            assert made.status_code == 201, made.text
        await wait_for_shares(database, "ingest", 2)
        await wait_for_shares(database, "consume", 2)
        urls = [s.url for s in ingests]
        accepted: list[str] = []
        async with aiohttp.ClientSession() as session:
            stream = asyncio.create_task(_stream(session, urls, tenant, offered, seconds,
                                                 accepted))
            await asyncio.sleep(2)
            urls.remove(ingests[0].url)
            ingests[0].kill()
            await asyncio.sleep(1.5)
            relays[0].kill()
            await asyncio.sleep(1.5)
            consumers[0].kill()
            replacement = start_server("consume", database_url=database, **env)
            admin = await asyncpg.connect(database)
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND application_name <> $1", WITNESS)
            await admin.close()
            await asyncio.sleep(1.5)
            subprocess.run(["rabbitmqctl", "close_all_connections", "relayforge fault test"],
                           check=True, capture_output=True, timeout=60)
            await asyncio.sleep(1.5)
            replacement.stop()  # SIGTERM: it finishes what it holds and hands back the rest
            await stream
        assert len(accepted) >= seconds * tenant_rate / 2, len(accepted)
        # the tenant's limit, for the deployment: never more than 10 % over rate x time + burst
        assert len(accepted) <= 1.1 * (tenant_rate * seconds + tenant_rate), len(accepted)
        await assert_each_ran_to_success_once(database, accepted)
        deliveries = await _deliveries_of(database, accepted)
        arrived = await receiver.wait_for_each("/hooks", "webhook-id", deliveries, timeout=90)
        first = {}
        for a in sorted(arrived, key=lambda a: a.at):
            first.setdefault(a.headers["webhook-id"], a.at)
        assert sorted(first) == sorted(deliveries), "a delivery never arrived"
        times = sorted(first.values())
        rate = (len(times) - 1) / (times[-1] - times[0])
        assert rate <= 1.1 * destination_rate, rate
        print(f"{len(accepted)} accepted, all succeeded once; {len(first)} deliveries at "
              f"{rate:.1f}/s ({len(arrived) - len(first)} sent twice)")
    finally:
        await receiver.stop()


async def _stream(session: aiohttp.ClientSession, urls: list[str], tenant: str, rate: int,
                  seconds: int, accepted: list[str]) -> None:
    """`rate` signed webhooks a second for the tenant, round robin over the ingest processes
    still in `urls`; the job ids of those accepted. A refused or failed request is the
    provider's to retry, and is not counted."""
    start = time.monotonic()

    async def one(i: int) -> None:
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        body = orjson.dumps({"event": "fault.stream", "data": {"i": i, "u": uuid.uuid4().hex}})
        try:
            async with session.post(f"{urls[i % len(urls)]}/webhooks/generic", data=body,
                                    headers={"X-Signature": sign_generic(body),
                                             "X-Tenant-Id": tenant,
                                             "Content-Type": "application/json"}) as r:
                if r.status == 202:
                    accepted.append((await r.json())["job_id"])
        except aiohttp.ClientError:
            pass

    await asyncio.gather(*(one(i) for i in range(rate * seconds)))


async def _deliveries_of(database: str, job_ids: list[str]) -> list[str]:
    conn = await asyncpg.connect(database)
    try:
        rows = await conn.fetch("SELECT id FROM deliveries WHERE job_id = ANY($1::uuid[])",
                                [uuid.UUID(j) for j in job_ids])
    finally:
        await conn.close()
    assert len(rows) == len(job_ids), "a job made no delivery"
    return [str(r["id"]) for r in rows]
