"""Configuration: defaults from the contract, one clear line naming a bad variable."""

from __future__ import annotations

import base64
import uuid

import pytest

from relayforge.settings import ConfigError, load_settings


def test_contract_defaults():
    s = load_settings({})
    assert (s.server.host, s.server.port) == ("127.0.0.1", 8080)
    assert s.tenant.default_id == uuid.UUID(int=0)
    assert s.hardening.ingress_rate_limit_per_second == 200
    assert s.hardening.ingress_burst == 400
    assert s.hardening.max_body_bytes == 262144
    assert s.hardening.tenant_rate_limit_per_second == 100
    assert s.hardening.tenant_rate_limit_burst == 200
    assert s.hardening.tenant_daily_quota == 100000
    assert s.webhooks.stripe_signature_tolerance_seconds == 300
    assert s.worker.max_attempts == 5


def test_database_url_alias():
    assert load_settings({"DATABASE_URL": "postgresql://x/y"}).database.url == "postgresql://x/y"
    both = {"DATABASE_URL": "postgresql://a/a", "DATABASE__URL": "postgresql://b/b"}
    assert load_settings(both).database.url == "postgresql://b/b"


@pytest.mark.parametrize("var,value", [
    ("SERVER__PORT", "eighty"),
    ("SERVER__PORT", "70000"),
    ("HARDENING__MAX_BODY_BYTES", "-1"),
    ("TENANT__DEFAULT_ID", "not-a-uuid"),
    ("LOG__JSON", "maybe"),
    ("LOG__LEVEL", "LOUD"),
    ("ADMIN__FALLBACK_API_KEYS_JSON", '[{"key": "k", "role": "root"}]'),
    ("ADMIN__FALLBACK_API_KEYS_JSON", "not json"),
    ("SECRETS__MASTER_KEY", "c2hvcnQ="),
    ("INGEST__MODE", "fast"),
    ("WORKER__MAX_ATTEMPTS", "0"),
])
def test_bad_value_names_the_variable(var, value):
    with pytest.raises(ConfigError) as err:
        load_settings({var: value})
    assert str(err.value).startswith(var)
    assert "\n" not in str(err.value)


def test_production_refuses_dev_secrets_and_missing_master_key():
    with pytest.raises(ConfigError, match="SECRETS__MASTER_KEY"):
        load_settings({"APP_ENV": "production"})
    key = base64.b64encode(b"k" * 32).decode()
    with pytest.raises(ConfigError, match="WEBHOOKS__GENERIC_HMAC_SECRET"):
        load_settings({"APP_ENV": "production", "SECRETS__MASTER_KEY": key})
    ok = load_settings({
        "APP_ENV": "production", "SECRETS__MASTER_KEY": key,
        "WEBHOOKS__GENERIC_HMAC_SECRET": "g" * 16, "WEBHOOKS__GITHUB_SECRET": "h" * 16,
        "WEBHOOKS__STRIPE_ENDPOINT_SECRET": "whsec_" + "s" * 16,
    })
    assert ok.production and ok.secrets.master_key == b"k" * 32


PRODUCTION = {"SECRETS__MASTER_KEY": base64.b64encode(b"k" * 32).decode(),
              "WEBHOOKS__GENERIC_HMAC_SECRET": "g" * 16, "WEBHOOKS__GITHUB_SECRET": "h" * 16,
              "WEBHOOKS__STRIPE_ENDPOINT_SECRET": "whsec_" + "s" * 16}


@pytest.mark.parametrize("var,value", [
    ("DESTINATIONS__ALLOW_PRIVATE_NETWORKS", "true"),
    ("ADMIN__FALLBACK_API_KEYS_JSON", '[{"key": "k", "role": "admin"}]'),
    ("WEBHOOKS__GENERIC_HMAC_SECRET", "g"),
    ("WEBHOOKS__SLACK_SECRET", "short-secret"),
])
def test_production_refuses_private_destinations_and_short_keys_naming_the_variable(var, value):
    with pytest.raises(ConfigError) as err:
        load_settings({"APP_ENV": "production", **PRODUCTION, var: value})
    assert str(err.value).startswith(var) and "\n" not in str(err.value)
    load_settings({"APP_ENV": "production", **PRODUCTION,
                   "WEBHOOKS__SLACK_SECRET": ""})  # empty: no env fallback, allowed


@pytest.mark.parametrize("raw", ["Production", "PRODUCTION", "production ", " prOduction\t"])
def test_app_env_is_normalised_so_production_is_never_run_as_development(raw):
    assert load_settings({"APP_ENV": raw, **PRODUCTION}).production
    with pytest.raises(ConfigError, match="SECRETS__MASTER_KEY"):
        load_settings({"APP_ENV": raw})  # the production checks apply


@pytest.mark.parametrize("raw", ["prod", "staging", "", "production-eu", "dev"])
def test_an_unknown_app_env_stops_the_start(raw):
    with pytest.raises(ConfigError) as err:
        load_settings({"APP_ENV": raw, **PRODUCTION})
    assert str(err.value).startswith("APP_ENV: invalid value")


def test_production_refuses_the_published_development_master_key():
    from relayforge.settings import DEV_MASTER_KEY

    with pytest.raises(ConfigError, match="SECRETS__MASTER_KEY: the development key"):
        load_settings({"APP_ENV": "production", **PRODUCTION,
                       "SECRETS__MASTER_KEY": DEV_MASTER_KEY})
    assert load_settings({"APP_ENV": "development", "SECRETS__MASTER_KEY": DEV_MASTER_KEY})


def test_cli_prints_one_line_for_bad_config():
    import subprocess
    import sys

    from tests.support import ROOT

    out = subprocess.run([sys.executable, "-m", "relayforge", "serve"], cwd=ROOT,
                         env={"PATH": "/usr/bin:/bin", "SERVER__PORT": "abc"},
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "relayforge: configuration error: SERVER__PORT: invalid value 'abc': "
        "invalid literal for int() with base 10: 'abc'"
    ]


@pytest.mark.parametrize("var", ["RETENTION__INBOX_DAYS", "RETENTION__JOBS_DAYS",
                                 "RETENTION__OUTBOX_DAYS", "RETENTION__AUDIT_DAYS"])
def test_a_retention_of_zero_days_stops_the_start_in_one_line(var):
    """0 days would delete every row at the next prune (it once emptied the inbox in 70 s)."""
    import subprocess
    import sys

    from tests.support import ROOT

    with pytest.raises(ConfigError, match=f"{var}: must be at least 1"):
        load_settings({var: "0"})
    out = subprocess.run([sys.executable, "-m", "relayforge", "serve"], cwd=ROOT,
                         env={"PATH": "/usr/bin:/bin", var: "0"}, capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"relayforge: configuration error: {var}: must be at least 1 (0 would delete every row "
        "at the next prune)"]


@pytest.mark.parametrize(("argv", "line"), [
    (["nosuch"], "relayforge: argument command: invalid choice: 'nosuch' (choose from "),
    (["jobs", "reprocess", "--limit", "-5"],
     "relayforge: jobs reprocess: argument --limit: -5 is not between 1 and 1000"),
    (["jobs", "reprocess", "--limit", "abc"],
     "relayforge: jobs reprocess: argument --limit: not an integer: 'abc'"),
    (["secrets", "set", "--tenant", "00000000-0000-0000-0000-000000000000", "--provider",
      "generic", "--previous-expires-in", "-10", "x"],
     "relayforge: secrets set: argument --previous-expires-in: -10 is not between 0 and "
     "31536000"),
])
def test_cli_refuses_bad_arguments_in_one_line_before_touching_the_database(argv, line):
    """Bounded as the admin API bounds the same fields; no traceback, exit 2."""
    import subprocess
    import sys

    from tests.support import ROOT

    out = subprocess.run([sys.executable, "-m", "relayforge", *argv], cwd=ROOT,
                         env={"PATH": "/usr/bin:/bin", "DATABASE__URL": "postgresql://nowhere/x"},
                         capture_output=True, text=True)
    assert out.returncode == 2
    [printed] = out.stderr.strip().splitlines()
    assert printed.startswith(line), printed
