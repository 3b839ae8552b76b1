"""Settings: the one source of `ferry run`'s options, FERRY_* variables and configuration docs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from ferry.cli.run import options_of, run, settings_from, settings_options
from ferry.cli.webhooks import GROUPS as WEBHOOK_GROUPS
from ferry.cli.webhooks import webhooks
from ferry.domain.flags.bucketing import DEFAULT_BUCKETING, GENERATIONS
from ferry.settings import (
    AdmissionSettings,
    ApiSettings,
    CacheSettings,
    DatabaseSettings,
    FlagSettings,
    HistorySettings,
    ReconcileSettings,
    Settings,
    SettingsError,
    VaultSettings,
    WebhookSettings,
)
from ferry.settings import docs as settings_docs
from ferry.settings.options import options

DB = "postgresql://ferry:s3cret@127.0.0.1:5432/ferry"
REDIS = "redis://:hunter2@127.0.0.1:6379/0"
REQUIRED = {"FERRY_DATABASE_URL": DB, "FERRY_REDIS_URL": REDIS}

# Every `ferry run` option and variable in use before the settings were grouped (README, docs,
# devenv/stack.py, tests/integration/conftest.py, webhooks/README.md): they must keep working.
EXISTING = {
    "--kubeconfig": "KUBECONFIG",
    "--database-url": "FERRY_DATABASE_URL",
    "--redis-url": "FERRY_REDIS_URL",
    "--api-host": "FERRY_API_HOST",
    "--api-port": "FERRY_API_PORT",
    "--webhook-host": "FERRY_WEBHOOK_HOST",
    "--webhook-port": "FERRY_WEBHOOK_PORT",
    "--webhook-dir": "FERRY_WEBHOOK_DIR",
    "--workers": "FERRY_WORKERS",
    "--retain-revisions": "FERRY_RETAIN_REVISIONS",
    "--retain-days": "FERRY_RETAIN_DAYS",
    "--audit-retain-days": "FERRY_AUDIT_RETAIN_DAYS",
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own FERRY_* and KUBECONFIG must not leak into what is being tested."""
    for option in options():
        monkeypatch.delenv(option.env, raising=False)


def parse(args: list[str], env: dict[str, str] | None = None) -> Settings:
    """Settings as `ferry run` builds them from this command line and environment."""
    seen: list[Settings] = []

    @click.command()
    @settings_options
    def probe(**params: Any) -> None:
        seen.append(settings_from(params))

    result = CliRunner().invoke(probe, args, env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return seen[0]


def refused(args: list[str], env: dict[str, str] | None = None) -> str:
    result = CliRunner().invoke(run, args, env=env)
    assert result.exit_code == 2, result.output
    return result.output


def minimal() -> Settings:
    return Settings(database=DatabaseSettings(url=DB), cache=CacheSettings(url=REDIS))


# ------------------------------------------------------------------------------------- defaults


def test_defaults_are_what_the_operator_ran_with_before() -> None:
    settings = minimal()
    assert settings.kubernetes.kubeconfig is None
    assert settings.kubernetes.watch_timeout_seconds == 300
    assert (settings.api.host, settings.api.port) == ("127.0.0.1", 8080)
    assert (settings.webhooks.host, settings.webhooks.port) == ("127.0.0.1", None)
    assert settings.webhooks.cert_dir is None and settings.webhooks.client_ca_file is None
    assert settings.reconcile == ReconcileSettings(
        workers=8,
        parallel_applies=16,
        requeue_initial_seconds=0.5,
        requeue_max_seconds=30.0,
        resync_seconds=300.0,
    )
    assert settings.history == HistorySettings(None, None, None, 3600.0)
    assert settings.cache.timeout_seconds == 2 and settings.database.pool_max_size == 10
    assert settings.flags.default_bucketing == "flagd-v3"
    assert settings.vault.address is None and settings.vault.allowed_path_prefixes == ()


def test_the_command_line_defaults_are_the_dataclass_defaults() -> None:
    assert parse([], env=REQUIRED) == minimal()


def test_database_and_redis_urls_are_required() -> None:
    output = refused([], env={"FERRY_REDIS_URL": REDIS})
    assert "Missing option '--database-url'" in output
    output = refused([], env={"FERRY_DATABASE_URL": DB})
    assert "Missing option '--redis-url'" in output


def test_ferry_webhooks_reads_its_groups_and_needs_no_database_or_redis() -> None:
    """`ferry webhooks` takes the options of the groups admission reads, no connection URI (it
    has none to take), and refuses to start without a webhook port, naming the option."""
    help_text = CliRunner().invoke(webhooks, ["--help"]).output
    assert "--webhook-port" in help_text and "--validation-workers" in help_text
    assert "--database-url" not in help_text and "--redis-url" not in help_text
    assert "--workers" not in help_text.replace("--validation-workers", "")
    result = CliRunner().invoke(webhooks, [], env={"FERRY_DATABASE_URL": DB})
    assert result.exit_code == 2 and "--webhook-port" in result.output, result.output
    seen: list[AdmissionSettings] = []

    @click.command()
    @options_of(WEBHOOK_GROUPS)
    def probe(**params: Any) -> None:
        seen.append(settings_from(params, groups=WEBHOOK_GROUPS, into=AdmissionSettings))

    args = ["--webhook-port", "9443", "--validation-workers", "3"]
    outcome = CliRunner().invoke(probe, args, env={"FERRY_VAULT_ADDRESS": "https://v:8200"})
    assert outcome.exit_code == 0, outcome.output
    [settings] = seen
    assert settings.webhooks.port == 9443 and settings.validation.workers == 3
    assert settings.vault.address == "https://v:8200"
    assert not hasattr(settings, "database") and not hasattr(settings, "cache")


# ---------------------------------------------------------------------------- names and sources


def test_every_existing_option_and_variable_still_works() -> None:
    by_option = {option.option: option for option in options()}
    for flag, env in EXISTING.items():
        assert by_option[flag].env == env
    settings = parse(
        [
            *("--kubeconfig", "/etc/kubeconfig"),
            *("--database-url", DB, "--redis-url", REDIS),
            *("--api-host", "0.0.0.0", "--api-port", "9000"),
            *("--webhook-host", "10.0.0.1", "--webhook-port", "9443"),
            *("--webhook-dir", "/etc/ferry/webhook", "--workers", "3"),
            *("--retain-revisions", "5", "--retain-days", "7", "--audit-retain-days", "30"),
        ]
    )
    assert settings.kubernetes.kubeconfig == "/etc/kubeconfig"
    assert settings.api == ApiSettings(host="0.0.0.0", port=9000)
    assert settings.webhooks == WebhookSettings(
        host="10.0.0.1", port=9443, cert_dir=Path("/etc/ferry/webhook")
    )
    assert settings.reconcile.workers == 3
    assert settings.history == HistorySettings(5, 7, 30)
    assert "--verbose" in CliRunner().invoke(run, ["--help"]).output


@pytest.mark.parametrize(
    ("flag", "env", "path", "text", "value"),
    [
        ("--workers", "FERRY_WORKERS", "reconcile.workers", "4", 4),
        ("--redis-url", "FERRY_REDIS_URL", "cache.url", "redis://127.0.0.1:1/2", None),
        ("--reconcile-resync-seconds", None, "reconcile.resync_seconds", "1.5", 1.5),
        ("--history-prune-seconds", None, "history.prune_seconds", "60", 60.0),
        ("--webhook-dir", "FERRY_WEBHOOK_DIR", "webhooks.cert_dir", "/tmp/w", Path("/tmp/w")),
        ("--webhook-client-ca-file", None, "webhooks.client_ca_file", "/ca.pem", Path("/ca.pem")),
        ("--flags-default-bucketing", None, "flags.default_bucketing", "flagd-v2", None),
        ("--vault-auth-method", None, "vault.auth_method", "token", None),
    ],
)
def test_option_beats_variable_beats_default(
    flag: str, env: str | None, path: str, text: str, value: Any
) -> None:
    env = env or "FERRY_" + flag.removeprefix("--").upper().replace("-", "_")
    expected = text if value is None else value
    group, name = path.split(".")

    def read(settings: Settings) -> Any:
        return getattr(getattr(settings, group), name)

    default = read(minimal())
    assert read(parse([], env=REQUIRED)) == default
    assert read(parse([], env={**REQUIRED, env: text})) == expected
    assert expected != default
    other = parse([flag, text], env={**REQUIRED, env: "garbage-from-the-environment"})
    assert read(other) == expected


def test_an_empty_variable_counts_as_unset() -> None:
    settings = parse([], env={**REQUIRED, "FERRY_WORKERS": "", "FERRY_RETAIN_DAYS": ""})
    assert settings.reconcile.workers == 8 and settings.history.retain_days is None


def test_a_list_is_space_separated_in_the_variable_and_repeated_as_an_option() -> None:
    env = {**REQUIRED, "FERRY_VAULT_ALLOWED_PATH_PREFIXES": "apps/ tenants/{namespace}/"}
    settings = parse([], env=env)
    assert settings.vault.allowed_path_prefixes == ("apps/", "tenants/{namespace}/")
    flags = ["--vault-allowed-path-prefixes", "a/", "--vault-allowed-path-prefixes", "b/"]
    assert parse(flags, env=env).vault.allowed_path_prefixes == ("a/", "b/")


def test_the_vault_token_comes_from_the_environment_only_and_is_never_shown() -> None:
    settings = parse([], env={**REQUIRED, "FERRY_VAULT_TOKEN": "hvs.topsecret"})
    assert settings.vault.token == "hvs.topsecret"
    assert "no such option" in refused(["--vault-token", "x"], env=REQUIRED).lower()
    shown = repr(settings)
    for secret in ("hvs.topsecret", "s3cret", "hunter2"):
        assert secret not in shown


def test_redis_sentinel_settings_are_parsed_checked_and_the_password_never_shown() -> None:
    plain = parse([], env=REQUIRED).cache
    assert plain.sentinels == () and plain.sentinel_addresses == ()
    assert plain.sentinel_master == "mymaster" and plain.sentinel_password is None

    env = {
        **REQUIRED,
        "FERRY_CACHE_SENTINELS": "sentinel-0.redis:26379 10.0.0.7:26380  [fd00::1]:26381",
        "FERRY_CACHE_SENTINEL_MASTER": "ferry-cache",
        "FERRY_CACHE_SENTINEL_PASSWORD": "s3ntinel-pw",
    }
    cache = parse([], env=env).cache
    assert cache.sentinel_addresses == (
        ("sentinel-0.redis", 26379),
        ("10.0.0.7", 26380),
        ("fd00::1", 26381),
    )
    assert (cache.sentinel_master, cache.sentinel_password) == ("ferry-cache", "s3ntinel-pw")
    flags = ["--cache-sentinels", "a:1", "--cache-sentinels", "b:2"]
    assert parse(flags, env=env).cache.sentinel_addresses == (("a", 1), ("b", 2))

    # The sentinels' password: from the environment only, and never in a repr.
    assert "no such option" in refused(["--cache-sentinel-password", "x"], env=REQUIRED).lower()
    assert "s3ntinel-pw" not in repr(parse([], env=env))

    def why(env_values: dict[str, str]) -> str:
        return " ".join(refused([], env={**REQUIRED, **env_values}).split())

    assert "cache.sentinels: 'sentinel-0' is not host:port" in why(
        {"FERRY_CACHE_SENTINELS": "sentinel-0"}
    )
    assert "cache.sentinels: 'a:99999': the port must be a number from 1 to 65535" in why(
        {"FERRY_CACHE_SENTINELS": "a:99999"}
    )
    assert "'::1:26379' is not host:port ([host]:port for an IPv6 address)" in why(
        {"FERRY_CACHE_SENTINELS": "::1:26379"}
    )
    with pytest.raises(SettingsError, match=r"cache\.sentinel_master is empty"):
        CacheSettings(url=REDIS, sentinels=("a:1",), sentinel_master=" ")
    unix = why({"FERRY_REDIS_URL": "unix:///run/redis.sock", "FERRY_CACHE_SENTINELS": "a:1"})
    assert "with cache.sentinels the URL must be redis:// or rediss://, not unix://" in unix


def test_names_are_unique_and_follow_the_convention() -> None:
    all_options = options()
    assert len({o.option for o in all_options if o.option}) == len(
        [o for o in all_options if o.option]
    )
    assert len({o.env for o in all_options}) == len(all_options)
    legacy = set(EXISTING.values())
    # Credentials are read from the environment only: they have no option.
    credentials = {"FERRY_VAULT_TOKEN", "FERRY_CACHE_SENTINEL_PASSWORD"}
    assert {o.env for o in all_options if o.option is None} == credentials
    for option in all_options:
        assert option.help, option.path
        if option.env not in legacy and option.env not in credentials:
            assert option.option == "--" + option.env.removeprefix("FERRY_").lower().replace(
                "_", "-"
            )
    run_options = {name for param in run.params for name in param.opts}
    generated = {o.option for o in all_options if o.option}
    assert run_options == generated | {"--verbose", "-v"}


# ----------------------------------------------------------------------------- types and ranges


@pytest.mark.parametrize(
    ("env", "value", "message"),
    [
        ("FERRY_WORKERS", "0", "0 is not in the range x>=1"),
        ("FERRY_WORKERS", "many", "'many' is not a valid integer"),
        ("FERRY_API_PORT", "70000", "70000 is not in the range 1<=x<=65535"),
        ("FERRY_RECONCILE_RESYNC_SECONDS", "0", "0.0 is not in the range x>0"),
        ("FERRY_VAULT_AUTH_METHOD", "approle", "'approle' is not one of 'token', 'kubernetes'"),
    ],
)
def test_bad_values_are_refused_naming_the_option(env: str, value: str, message: str) -> None:
    flag = next(option.option for option in options() if option.env == env)
    output = " ".join(refused([], env={**REQUIRED, env: value}).split())
    assert f"Invalid value for '{flag}' (env var: '{env}'): {message}" in output


def test_values_that_contradict_each_other_are_refused() -> None:
    output = refused(["--vault-default-refresh-seconds", "30"], env=REQUIRED)
    assert "vault.default_refresh_seconds (30) is shorter than vault.min_refresh_seconds (60)" in (
        output
    )


def test_values_are_typed() -> None:
    settings = parse(
        ["--api-port", "9000", "--webhook-dir", "d", "--reconcile-requeue-max-seconds", "7"],
        env=REQUIRED,
    )
    assert type(settings.api.port) is int
    assert isinstance(settings.webhooks.cert_dir, Path)
    assert type(settings.reconcile.requeue_max_seconds) is float


@pytest.mark.parametrize(
    ("group", "values", "message"),
    [
        (
            ReconcileSettings,
            {"workers": 0},
            "ReconcileSettings.workers is 0; it must be at least 1",
        ),
        (ReconcileSettings, {"workers": "8"}, "ReconcileSettings.workers must be of type int"),
        (ReconcileSettings, {"workers": True}, "ReconcileSettings.workers must be of type int"),
        (ReconcileSettings, {"resync_seconds": 0}, "resync_seconds is 0; it must be more than 0"),
        (ApiSettings, {"port": 0}, "ApiSettings.port is 0; it must be at least 1"),
        (ApiSettings, {"port": 65536}, "ApiSettings.port is 65536; it must be at most 65535"),
        (WebhookSettings, {"cert_dir": "dir"}, "WebhookSettings.cert_dir must be of type Path"),
        (VaultSettings, {"auth_method": "approle"}, "'approle'; it must be one of 'token'"),
        (VaultSettings, {"allowed_path_prefixes": ["a/"]}, "must be a tuple of str"),
        (DatabaseSettings, {"url": None}, "DatabaseSettings.url must be set"),
        (
            VaultSettings,
            {"min_refresh_seconds": 600, "default_refresh_seconds": 60},
            "vault.default_refresh_seconds (60) is shorter than vault.min_refresh_seconds (600)",
        ),
    ],
)
def test_settings_built_in_code_are_checked_too(
    group: type, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        group(**values)
    assert message in str(caught.value)


def test_the_bucketing_choices_are_the_domain_generations() -> None:
    choices = next(o.choices for o in options() if o.path == "flags.default_bucketing")
    assert set(choices or ()) == GENERATIONS
    assert FlagSettings().default_bucketing == DEFAULT_BUCKETING


def test_an_int_is_accepted_for_seconds() -> None:
    assert ReconcileSettings(resync_seconds=5).resync_seconds == 5


def test_settings_are_frozen() -> None:
    settings = minimal()
    with pytest.raises(AttributeError):
        settings.reconcile.workers = 1  # type: ignore[misc]


# ------------------------------------------------------------------------------------------ docs


def test_docs_configuration_md_is_generated_from_the_settings() -> None:
    current = settings_docs.DOC.read_text()
    assert settings_docs.update(current) == current, (
        "docs/configuration.md is out of date with operator/ferry/settings/__init__.py: run "
        "`.venv/bin/python -m ferry.settings.docs --write`"
    )


def test_the_docs_list_every_setting_with_its_names_and_default() -> None:
    table = settings_docs.render()
    for option in options():
        row = next(line for line in table.splitlines() if f"`{option.env}`" in line)
        assert (f"`{option.option}`" if option.option else "(none)") in row
    assert "| `--workers` | `FERRY_WORKERS` | integer ≥ 1 | `8` |" in table
    assert "| `--database-url` | `FERRY_DATABASE_URL` | text | **required** |" in table


def test_a_new_docstring_changes_the_docs() -> None:
    text = "intro\n" + settings_docs.BEGIN + "\nold table\n" + settings_docs.END + "\noutro\n"
    updated = settings_docs.update(text)
    assert updated.startswith("intro\n") and updated.endswith("\noutro\n")
    assert "old table" not in updated and "`FERRY_WORKERS`" in updated
    with pytest.raises(ValueError, match="markers"):
        settings_docs.update("no markers")
