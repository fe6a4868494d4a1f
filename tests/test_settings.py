"""Settings resolve flag > environment > config file > default (CONTRACT §2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from humanglue_cli.core.errors import BadInput
from humanglue_cli.core.settings import load_settings, parse_duration, parse_when


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("24h", 86400), ("30d", 2592000), ("2w", 1209600)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "1", "h", "1y", "-3d", "1.5h", "the day before"])
def test_bad_durations_are_bad_input(text: str) -> None:
    with pytest.raises(BadInput):
        parse_duration(text)


def test_when_takes_durations_and_iso() -> None:
    now = datetime(2026, 11, 24, 12, tzinfo=UTC)
    assert parse_when("1h", now) == now - timedelta(hours=1)
    assert parse_when("2026-11-24T10:00:00", now) == datetime(2026, 11, 24, 10, tzinfo=UTC)
    assert parse_when("2026-11-24T10:00:00+02:00", now).utcoffset() == timedelta(hours=2)


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


def test_retention_minimums_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUMANGLUE_NOTIFICATION_RETENTION", "12h")
    with pytest.raises(BadInput, match="under the minimum of 1d"):
        load_settings()
    monkeypatch.setenv("HUMANGLUE_NOTIFICATION_RETENTION", "7d")
    monkeypatch.setenv("HUMANGLUE_PRESENCE_RETENTION", "30m")
    with pytest.raises(BadInput, match="under the minimum of 1h"):
        load_settings()


def test_unknown_config_key_and_missing_explicit_file(tmp_path: Path) -> None:
    path = _config(tmp_path, 'databse_url = "typo"\n')
    with pytest.raises(BadInput, match="unknown key"):
        load_settings(config=str(path))
    with pytest.raises(BadInput, match="not found"):
        load_settings(config=str(tmp_path / "nope.toml"))
