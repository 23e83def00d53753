"""The container image, as an operator runs it: `migrate`, then ingest, relay and consume as three
containers against the real PostgreSQL and RabbitMQ; a signed webhook ends `succeeded`, and
stopping consume with that job in flight lets the job finish (once) before the container exits.

`.ci/run` builds the image and sets RELAYFORGE_IMAGE (and RELAYFORGE_CONTAINER_ENGINE, podman or
docker); without them this module is skipped.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import orjson
import pytest

from tests.e2e.pipeline_support import amqp_env, delete_topology, wait_for_jobs
from tests.support import (
    ROOT,
    create_database,
    drop_database,
    eventually,
    free_port,
    run_sync,
    sign_generic,
)

IMAGE = os.environ.get("RELAYFORGE_IMAGE", "")
ENGINE = os.environ.get("RELAYFORGE_CONTAINER_ENGINE", "podman")
pytestmark = [
    pytest.mark.image,
    pytest.mark.skipif(not IMAGE, reason="RELAYFORGE_IMAGE is not set (.ci/run builds the image)"),
]

GENERIC_SECRET = "image-test-generic-secret-0123456789"
ADMIN_KEY = "image-test-admin-key-0123456789"
HANDLER_SLEEP = 6.0  # long enough to stop consume while the job is in flight


def engine(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ENGINE, *args], capture_output=True, text=True, timeout=timeout)


class Deployment:
    """Containers of one image on the host's network, sharing one env file."""

    def __init__(self, env_file: Path) -> None:
        self.env_file = env_file
        self.prefix = f"rf-image-{uuid.uuid4().hex[:8]}"
        self.names: list[str] = []
        self.urls: dict[str, str] = {}

    def run_once(self, *command: str) -> subprocess.CompletedProcess[str]:
        return engine("run", "--rm", "--network", "host", "--env-file", str(self.env_file),
                      IMAGE, *command)

    def start(self, mode: str, **env: str) -> str:
        name, port = f"{self.prefix}-{mode}", free_port()
        flags = [f"--env={k}={v}" for k, v in {"SERVER__HOST": "127.0.0.1",
                                                "SERVER__PORT": str(port), **env}.items()]
        # The handlers a user adds are mounted beside the image, as a deployment would.
        out = engine("run", "-d", "--name", name, "--network", "host", "--no-healthcheck",
                     "--env-file", str(self.env_file), *flags,
                     "-v", f"{ROOT / 'tests'}:/opt/handlers/tests:ro",
                     IMAGE, "serve", "--mode", mode)
        assert out.returncode == 0, out.stderr
        self.names.append(name)
        self.urls[mode] = f"http://127.0.0.1:{port}"
        return name

    def logs(self, name: str) -> str:
        out = engine("logs", name)
        return out.stdout + out.stderr

    def remove(self) -> None:
        for name in self.names:
            engine("rm", "-f", "-t", "0", name)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[tuple[Deployment, str]]:
    name, database_url = run_sync(create_database(prefix="rf_image"))
    topology = f"rft.image.{uuid.uuid4().hex[:8]}"
    env = {
        "SECRETS__MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
        "WEBHOOKS__GENERIC_HMAC_SECRET": GENERIC_SECRET,
        "WEBHOOKS__GITHUB_SECRET": "image-test-github-secret-0123456789",
        "WEBHOOKS__STRIPE_ENDPOINT_SECRET": "whsec_image_test_stripe_0123456789",
        "ADMIN__FALLBACK_API_KEYS_JSON": json.dumps([{"key": ADMIN_KEY, "role": "admin"}]),
        "DATABASE__URL": database_url,
        "DATABASE__MIGRATE_ON_START": "false",
        "WORKER__HANDLERS": "generic=tests.handlers:recording",
        "PYTHONPATH": "/opt/handlers",
        "LOG__LEVEL": "INFO",
        **amqp_env(topology),
    }
    env_file = tmp_path / "relayforge.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    deployment = Deployment(env_file)
    try:
        yield deployment, database_url
    finally:
        for container in deployment.names:  # what they said, for a failure's report
            print(f"--- {container}\n{deployment.logs(container)[-4000:]}")
        deployment.remove()
        run_sync(delete_topology(topology))
        run_sync(drop_database(name))


def test_the_image_runs_migrate_and_three_modes_and_drains_a_job_on_stop(deployment):
    deploy, database_url = deployment
    user = engine("image", "inspect", IMAGE, "--format", "{{.Config.User}}").stdout.strip()
    assert user not in ("", "0", "root"), user
    healthcheck = json.loads(engine("image", "inspect", IMAGE, "--format",
                                    "{{json .Config.Healthcheck}}").stdout)["Test"]

    migrated = deploy.run_once("migrate")
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    run_sync(_create_handler_runs(database_url))

    deploy.start("ingest")
    deploy.start("relay")
    consume = deploy.start("consume", TEST_HANDLER_SLEEP=str(HANDLER_SLEEP))
    run_sync(_all_ready(deploy))
    # The image's own HEALTHCHECK command, run where the engine would run it.
    assert healthcheck[0] == "CMD", healthcheck
    for name in deploy.names:
        probe = engine("exec", name, *healthcheck[1:])
        assert probe.returncode == 0, (name, probe.stderr)

    body = orjson.dumps({"event": "order.created", "data": {"id": uuid.uuid4().hex}})
    accepted = httpx.post(f"{deploy.urls['ingest']}/webhooks/generic", content=body, timeout=10,
                          headers={"X-Signature": sign_generic(body, GENERIC_SECRET),
                                   "X-Tenant-Id": str(uuid.uuid4())})
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]

    run_sync(wait_for_jobs(database_url, [job_id], ("processing",), timeout=60))
    stopped = engine("stop", "-t", "45", consume)  # SIGTERM; SIGKILL only after 45 s
    assert stopped.returncode == 0, stopped.stderr
    state = json.loads(engine("inspect", consume).stdout)[0]["State"]
    assert state["ExitCode"] == 0, (state, deploy.logs(consume)[-2000:])  # 137: it was killed

    [job] = run_sync(wait_for_jobs(database_url, [job_id], timeout=5))
    assert (job["status"], job["attempts"]) == ("succeeded", 1)
    runs = run_sync(_handler_runs(database_url, job_id))
    assert runs == 1, f"the handler ran {runs} times"
    draining = [orjson.loads(line) for line in deploy.logs(consume).splitlines()
                if '"message":"draining"' in line]
    assert draining and draining[0]["jobs"] == 1, draining

    # The admin API of the ingest container says the same, behind its key.
    shown = httpx.get(f"{deploy.urls['ingest']}/admin/jobs/{job_id}", timeout=10,
                      headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert shown.status_code == 200 and shown.json()["status"] == "succeeded", shown.text


async def _create_handler_runs(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("CREATE TABLE handler_runs (job_id uuid NOT NULL, attempt int NOT NULL,"
                           " finished_at timestamptz NOT NULL DEFAULT clock_timestamp())")
    finally:
        await conn.close()


async def _handler_runs(database_url: str, job_id: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM handler_runs WHERE job_id = $1",
                                       uuid.UUID(job_id)))
    finally:
        await conn.close()


async def _all_ready(deploy: Deployment) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        async def ready() -> bool:
            for url in deploy.urls.values():
                try:
                    if (await client.get(f"{url}/readyz")).status_code != 200:
                        return False
                except httpx.TransportError:
                    return False
            return True

        await eventually(ready, timeout=90, interval=0.5)
