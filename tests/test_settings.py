"""Settings resolve flag > environment > config file > default (CONTRACT §2), and each is
checked when it is used, its error naming where the bad value came from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from humanglue_cli.core.errors import BadInput
from humanglue_cli.core.settings import load_settings
from humanglue_cli.core.timeutil import parse_duration, parse_when
from humanglue_cli.core.urls import describe

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("24h", 86400), ("30d", 2592000), ("2w", 1209600)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1",
        "h",
        "1y",
        "-3d",
        "1.5h",
        "the day before",
        "99999999d",
        "9999999999999999999999s",
        "36501d",
        "١٠d",
    ],
)
def test_bad_or_absurd_durations_are_bad_input(text: str) -> None:
    with pytest.raises(BadInput):
        parse_duration(text)


def test_when_takes_durations_and_iso() -> None:
    assert parse_when("1h", UTC, NOW) == NOW - timedelta(hours=1)
    assert parse_when("2026-11-24T10:00:00", UTC, NOW) == datetime(2026, 11, 24, 10, tzinfo=UTC)
    with_offset = parse_when("2026-11-24T10:00:00+02:00", UTC, NOW)
    assert with_offset == datetime(2026, 11, 24, 8, tzinfo=UTC)


def test_a_naive_time_is_in_the_display_zone() -> None:
    tokyo = ZoneInfo("Asia/Tokyo")
    assert parse_when("2026-11-24T21:00", tokyo, NOW) == datetime(2026, 11, 24, 12, tzinfo=UTC)
    assert parse_when("2026-11-25", tokyo, NOW) == datetime(2026, 11, 24, 15, tzinfo=UTC)


@pytest.mark.parametrize("text", ["99999999d", "99999-01-01", "2026-13-01", "x" * 100_000])
def test_absurd_times_are_bad_input_with_a_short_message(text: str) -> None:
    with pytest.raises(BadInput) as raised:
        parse_when(text, UTC, NOW)
    assert len(str(raised.value)) < 300


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config" / "humanglue" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_precedence_flag_env_file_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().database_url.endswith("/data/humanglue/humanglue.db")
    _config(tmp_path, 'database_url = "sqlite:///file.db"\nuser = "file@x.edu"\n')
    assert load_settings().database_url == "sqlite:///file.db"
    monkeypatch.setenv("HUMANGLUE_DATABASE_URL", "postgresql://env/db")
    assert load_settings().database_url == "postgresql+psycopg://env/db"
    assert load_settings(database_url="sqlite:///flag.db").database_url == "sqlite:///flag.db"
    assert load_settings().user == "file@x.edu"


def test_a_bad_setting_fails_only_where_it_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUMANGLUE_NOTIFICATION_RETENTION", "12h")
    settings = load_settings()  # resolving checks nothing
    assert settings.database_url.startswith("sqlite:///")
    with pytest.raises(BadInput, match="HUMANGLUE_NOTIFICATION_RETENTION.*under the minimum of 1d"):
        settings.notification_retention  # noqa: B018
    monkeypatch.setenv("HUMANGLUE_NOTIFICATION_RETENTION", "7d")
    monkeypatch.setenv("HUMANGLUE_PRESENCE_RETENTION", "30m")
    assert load_settings().notification_retention == timedelta(days=7)
    with pytest.raises(BadInput, match="under the minimum of 1h"):
        load_settings().presence_retention  # noqa: B018


def test_config_file_values_name_the_file(tmp_path: Path) -> None:
    path = _config(tmp_path, 'notification_retention = "forever"\n')
    with pytest.raises(BadInput, match=f"notification_retention in {path}: not a duration"):
        load_settings(config=str(path)).notification_retention  # noqa: B018


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("garbage", "not a database URL"),
        ("mysql://root@localhost/x", "unsupported database 'mysql"),
        ("postgresql+psycopg2://h/db", "unsupported database"),
        ("postgresql://127.0.0.1:5432", "names no database"),
        ("postgresql://", "names no database"),
        ("sqlite://", "names a file"),
        ("postgresql://h:99999/db", "port 99999 .* is not 1 to 65535"),
        ("postgresql://h:0/db", "port 0 .* is not 1 to 65535"),
        ("postgresql://h/db?foo=bar", "an option libpq does not know: 'foo'"),
        ("postgresql://u:hunter2@h/db?sslmode=require&Host=x", "does not know: 'Host'"),
    ],
)
def test_database_urls_are_checked(url: str, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        load_settings(database_url=url).database_url  # noqa: B018


@pytest.mark.parametrize(
    "url",
    [
        "foo://bar",
        "amqp://guest@localhost//",
        "redis://h:port/0",
        "x",
        "redis://h/abc",
        "redis://h/-1",
    ],
)
def test_broker_urls_are_checked(url: str) -> None:
    with pytest.raises(BadInput):
        load_settings(broker_url=url).broker_url  # noqa: B018
    for good in ("rediss://h:6380/0", "redis://h", "redis://h/", "redis://:pw@h:6379/15"):
        assert load_settings(broker_url=good).broker_url == good


def test_a_value_that_is_not_utf8_is_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BadInput, match="--user.*not valid UTF-8"):
        load_settings(user="ada\udcff@example.edu")


@pytest.mark.parametrize("key", ["user", "tz", "database_url"])
def test_a_nul_from_the_config_file_is_bad_input(tmp_path: Path, key: str) -> None:
    # TOML spells one as "\u0000"; PostgreSQL refuses it in any text (it was exit 1 there)
    path = _config(tmp_path, f'{key} = "ada\\u0000@example.edu"\n')
    with pytest.raises(BadInput, match=f"{key} in {path}: .* contains a NUL character"):
        load_settings(config=str(path))


@pytest.mark.parametrize(
    ("setting", "url"),
    [
        ("database_url", "postgresql://u:hunter2@127.0.0.1:port/db"),
        ("database_url", "postgresql://u:hunter2@[::1/db"),
        ("database_url", "sqlite://u:hunter2@"),
        ("broker_url", "redis://:hunter2@127.0.0.1:port/0"),
        ("broker_url", "//u:hunter2@host/0"),
    ],
)
def test_a_malformed_url_is_quoted_without_its_password(setting: str, url: str) -> None:
    with pytest.raises(BadInput) as error:
        getattr(load_settings(**{setting: url}), setting)
    assert "hunter2" not in str(error.value) and "***" in str(error.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:hunter2@db.internal/platform",
        "postgresql://u@db.internal/platform?password=hunter2",
        "postgresql://u@/platform?password=hunter2&sslmode=require",
        "redis://:hunter2@redis.internal:6379/0",
        "rediss://redis.internal:6380/0?ssl_cert_reqs=none&password=hunter2",
        "postgresql://u:hunter2@127.0.0.1:port/db",
    ],
)
def test_a_url_is_described_without_its_password(url: str) -> None:
    shown = describe(url)
    assert "hunter2" not in shown and "***" in shown, shown
    assert (
        "db.internal" in shown or "redis.internal" in shown or "127.0.0.1" in shown or "@/" in shown
    )


def test_unknown_config_key_and_missing_explicit_file(tmp_path: Path) -> None:
    path = _config(tmp_path, 'databse_url = "typo"\n')
    with pytest.raises(BadInput, match="unknown setting 'databse_url'"):
        load_settings(config=str(path))
    with pytest.raises(BadInput, match="not found"):
        load_settings(config=str(tmp_path / "nope.toml"))


def test_child_env_carries_every_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _config(tmp_path, 'notification_retention = "90d"\n')
    monkeypatch.setenv("HUMANGLUE_TZ", "Asia/Tokyo")
    settings = load_settings(config=str(path), database_url="sqlite:///x.db")
    assert settings.child_env() == {
        "HUMANGLUE_CONFIG": str(path),
        "HUMANGLUE_DATABASE_URL": "sqlite:///x.db",
        "HUMANGLUE_NOTIFICATION_RETENTION": "90d",
        "HUMANGLUE_TZ": "Asia/Tokyo",
    }
