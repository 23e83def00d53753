"""The container image and the compose stack keep their promises (no Docker engine runs here:
these check the files, and run the Dockerfile's own commands where they can run outside it)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import yaml

from tests.support import ROOT, base_env

DOCKERFILE = (ROOT / "Dockerfile").read_text()
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SHELL_TOOLS = {"otel-collector", "jaeger"}  # distroless images: scraped by Prometheus instead


BUILD_STAGE, FINAL_STAGE = re.split(r"^FROM ", DOCKERFILE, flags=re.M)[1:]


def test_the_build_context_leaves_out_the_venv_and_local_data():
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*"  # everything out, then only what the build needs back in
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "constraints.txt", "setup.py", "README.md", "native",
                       "migrations", "relayforge"}


def test_the_image_checks_health_and_refuses_to_build_without_native_kernels():
    final = FINAL_STAGE
    assert "HEALTHCHECK" in final and "/healthz" in final
    assert 'relayforge doctor | grep -qx "kernels: native"' in final
    assert "/wheels" not in DOCKERFILE  # no wheel layer left behind
    assert "COPY --from=build /install /usr/local" in final


def test_dependencies_install_in_their_own_layer_without_the_embedded_postgres(tmp_path):
    """Runs the Dockerfile's own dependency-list command against the real pyproject.toml."""
    build = BUILD_STAGE
    run = next(line for line in build.splitlines() if "tomllib" in line)
    command = shlex.split(run.removeprefix("RUN ").split(" > ")[0])
    (tmp_path / "pyproject.toml").write_bytes((ROOT / "pyproject.toml").read_bytes())
    out = subprocess.run([sys.executable, *command[1:]], cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout.split()
    names = {re.split(r"[<>=\[ ]", dep)[0] for dep in out}
    assert "asyncpg" in names and "granian" in names
    assert "pgserver" not in names
    # the dependency layer comes before any project source is copied
    assert build.index("requirements.txt") < build.index("COPY relayforge")


def test_without_the_embedded_postgres_serve_needs_a_database_url(tmp_path):
    hidden = tmp_path / "pgserver"
    hidden.mkdir()
    (hidden / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'pgserver'\", name='pgserver')\n")
    env = base_env() | {"PYTHONPATH": str(tmp_path), "DATABASE__EMBEDDED_DIR": str(tmp_path / "pg"),
                        "SERVER__PORT": "1"}
    env.pop("DATABASE__URL", None)
    out = subprocess.run([sys.executable, "-m", "relayforge", "serve", "--mode", "ingest"],
                         env=env, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        "relayforge: configuration error: DATABASE__URL: required here (this install has no "
        "embedded PostgreSQL; `pip install pgserver` adds it)")


def test_compose_runs_in_production_with_secrets_from_the_env_file_only():
    anchor = COMPOSE["x-relayforge"]
    assert anchor["environment"]["APP_ENV"] == "production"
    assert anchor["env_file"] == [{"path": ".env", "required": True}]
    text = (ROOT / "docker-compose.yml").read_text()
    assert "ADMIN__FALLBACK_API_KEYS_JSON" not in text  # no default admin key
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", example, re.M))
    assert set(re.findall(r"\$\{([A-Z_]+):\?", text)) <= documented
    assert {"SECRETS__MASTER_KEY", "WEBHOOKS__GENERIC_HMAC_SECRET"} <= documented
    assert not re.search(r"^[A-Z_]+=\S", example, re.M)  # no value to copy into production


def test_every_compose_service_has_a_healthcheck_and_rabbitmq_keeps_its_data():
    services = COMPOSE["services"]
    for name, service in services.items():
        ours = service.get("build") or service.get("image") == "relayforge:latest"
        if name in SHELL_TOOLS or ours:
            continue  # relayforge services: the image's HEALTHCHECK
        assert "healthcheck" in service, name
    assert any(v.endswith(":/var/lib/rabbitmq") for v in services["rabbitmq"]["volumes"])
    scraped = (ROOT / "observability" / "prometheus" / "prometheus.yml").read_text()
    assert all(f"{name}:" in scraped for name in SHELL_TOOLS)
