"""`humanglue status` and `humanglue events failed/retry`, on real databases (both backends)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from humanglue_cli.commands.app import app
from humanglue_cli.core import maintenance
from humanglue_cli.core.db import dispose_engines
from humanglue_cli.core.settings import load_settings
from humanglue_cli.core.store import events, workers
from tests.conftest import BACKENDS
from tests.helpers import Site

CHECKS = {"database", "broker", "schema", "backlog", "failed_events", "workers", "cleanup"}


def hg(url: str, *args: str) -> Any:
    """Run the CLI in-process, then close its pooled connections (the test drops the db)."""
    try:
        return CliRunner().invoke(app, ["--database-url", url, *args])
    finally:
        dispose_engines()


def status_json(url: str, *args: str) -> tuple[int, dict[str, Any]]:
    result = hg(url, *args, "status", "--json")
    return result.exit_code, json.loads(result.stdout)


def failed_event(site: Site, kind: str = "bogus.kind", entity: str = "x") -> int:
    """An event kept as failed, as the worker leaves one after its last attempt."""
    with site.engine.begin() as conn:
        event_id = events.enqueue(conn, kind, entity, {"why": "test"})
    site.sql(
        "UPDATE hg_events SET status = 'failed', attempts = :a, last_error = :e, "
        "failed_at = CURRENT_TIMESTAMP WHERE id = :i",
        a=events.MAX_ATTEMPTS,
        e=f"unknown event kind {kind!r}",
        i=event_id,
    )
    return event_id


def pending_event(site: Site, due_seconds_ago: int = 0) -> int:
    with site.engine.begin() as conn:
        event_id = events.enqueue(conn, "bogus.kind", "y", {})
    if due_seconds_ago:
        earlier = (
            f"datetime('now', '-{due_seconds_ago} seconds')"
            if site.backend == "sqlite"
            else f"now() - interval '{due_seconds_ago} seconds'"
        )
        site.sql(
            f"UPDATE hg_events SET created_at = {earlier}, available_at = {earlier} WHERE id = :i",
            i=event_id,
        )
    return event_id


def beat(site: Site, worker: str = "embedded-test-1", ago: int = 0) -> None:
    with site.engine.begin() as conn:
        workers.beat(conn, worker, "embedded", "testhost", 4242, 17)
    if ago:
        earlier = (
            f"datetime('now', '-{ago} seconds')"
            if site.backend == "sqlite"
            else f"now() - interval '{ago} seconds'"
        )
        site.sql(f"UPDATE hg_workers SET last_seen_at = {earlier} WHERE id = :w", w=worker)


def event_states(site: Site) -> dict[int, tuple[str, int]]:
    return {r[0]: (r[1], r[2]) for r in site.sql("SELECT id, status, attempts FROM hg_events")}


# --- status -------------------------------------------------------------------------------


def test_status_is_healthy_on_a_fresh_database_with_a_live_worker(site: Site) -> None:
    # Given a migrated database, a worker's recent heartbeat and a cleanup run
    beat(site)
    maintenance.cleanup(site.engine, load_settings(), dry_run=False)
    # When
    code, report = status_json(site.url)
    # Then every check is present and ok
    assert code == 0, report
    assert report["healthy"] is True
    assert set(report["checks"]) == CHECKS
    assert {c["status"] for c in report["checks"].values()} == {"ok"}
    assert report["checks"]["database"]["url"].endswith(site.url.rsplit("/", 1)[-1])
    assert report["checks"]["schema"]["current"] == report["checks"]["schema"]["head"]
    assert report["checks"]["broker"]["configured"] is False
    (worker,) = report["checks"]["workers"]["seen"]
    assert (worker["kind"], worker["hostname"], worker["pid"], worker["processed"]) == (
        "embedded",
        "testhost",
        4242,
        17,
    )
    assert report["checks"]["cleanup"]["last_run_at"] is not None
    assert report["checks"]["backlog"]["pending"] == 0


def test_status_human_output_has_one_line_per_check(site: Site) -> None:
    result = hg(site.url, "status")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == len(CHECKS) + 1
    assert lines[0].split()[:2] == ["ok", "database"]
    assert any(line.split()[:2] == ["warn", "workers"] for line in lines)
    assert lines[-1].startswith("healthy")
    assert "\x1b[" not in result.stdout  # no colour off a terminal


def test_absent_workers_and_cleanup_only_warn(site: Site) -> None:
    code, report = status_json(site.url)
    assert code == 0
    assert report["checks"]["workers"]["status"] == "warn"
    assert report["checks"]["workers"]["seen"] == []
    assert report["checks"]["cleanup"]["status"] == "warn"


def test_a_worker_gone_silent_or_stopped_is_unhealthy(site: Site) -> None:
    # Given a worker whose last beat is 20 s old (killed: it missed three beats)
    beat(site, ago=20)
    # Then status fails, and the workers line says why
    code, report = status_json(site.url)
    assert code == 1
    check = report["checks"]["workers"]
    assert check["status"] == "fail" and "no live worker" in check["message"]
    assert "silent" in check["message"] and check["seen"][0]["alive"] is False
    # A worker that stopped on a signal is as gone
    beat(site, worker="embedded-test-2")
    with site.engine.begin() as conn:
        workers.stopped(conn, "embedded-test-2")
    code, report = status_json(site.url)
    assert code == 1 and "stopped" in report["checks"]["workers"]["message"]
    # One seen only more than a day ago is not missed: a warning (cron-run burst workers)
    site.sql("DELETE FROM hg_workers")
    beat(site, ago=25 * 3600)
    code, report = status_json(site.url)
    assert code == 0 and report["checks"]["workers"]["status"] == "warn"


def test_a_failed_event_is_unhealthy(site: Site) -> None:
    beat(site)
    failed_event(site)
    code, report = status_json(site.url)
    assert code == 1
    assert report["healthy"] is False
    assert report["checks"]["failed_events"] == {
        "status": "fail",
        "count": 1,
        "message": report["checks"]["failed_events"]["message"],
    }
    result = hg(site.url, "status")
    assert result.exit_code == 1
    assert "FAIL  failed events" in result.stdout
    assert result.stdout.splitlines()[-1] == "UNHEALTHY: failed events"


def test_a_stuck_backlog_is_unhealthy_and_a_fresh_one_is_not(site: Site) -> None:
    beat(site)
    pending_event(site)
    code, report = status_json(site.url)
    assert code == 0, report
    assert report["checks"]["backlog"]["due"] == 1
    pending_event(site, due_seconds_ago=120)
    code, report = status_json(site.url)
    assert code == 1
    backlog = report["checks"]["backlog"]
    assert (backlog["status"], backlog["pending"], backlog["due"]) == ("fail", 2, 2)
    assert backlog["longest_due_wait_seconds"] >= 119


def test_an_unreachable_broker_is_unhealthy_with_exit_1(site: Site) -> None:
    code, report = status_json(site.url, "--broker-url", "redis://127.0.0.1:1/0")
    assert code == 1
    broker = report["checks"]["broker"]
    assert (broker["status"], broker["configured"]) == ("fail", True)
    assert report["checks"]["database"]["status"] == "ok"


def test_a_reachable_broker_is_ok(tmp_path: Path, redis_url: str) -> None:
    site = Site.create(f"sqlite:///{tmp_path / 'b.db'}", tmp_path, "sqlite")
    try:
        code, report = status_json(site.url, "--broker-url", redis_url)
    finally:
        site.close()
    assert code == 0, report
    assert report["checks"]["broker"]["status"] == "ok"


def test_the_broker_password_is_not_shown(site: Site) -> None:
    code, report = status_json(site.url, "--broker-url", "redis://:s3cret@127.0.0.1:1/0")
    assert code == 1
    assert "s3cret" not in json.dumps(report)


@BACKENDS
def test_an_unmigrated_database_is_unhealthy(empty_db: str, tmp_path: Path) -> None:
    if empty_db.startswith("sqlite"):
        sqlite3.connect(empty_db.removeprefix("sqlite:///")).close()  # an empty file
    code, report = status_json(empty_db)
    assert code == 1
    assert report["checks"]["database"]["status"] == "ok"
    assert report["checks"]["schema"]["status"] == "fail"
    assert report["checks"]["schema"]["current"] is None
    assert report["checks"]["backlog"]["status"] == "skip"
    assert set(report["checks"]) == CHECKS


def test_a_missing_sqlite_file_is_reported_not_created(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "hg.db"
    code, report = status_json(f"sqlite:///{path}")
    assert code == 1
    assert report["checks"]["database"]["status"] == "fail"
    assert not path.exists()


def test_an_unreachable_database_exits_1_not_5() -> None:
    result = hg("postgresql://postgres@127.0.0.1:1/nothing", "status")
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0].startswith("FAIL  database")


# --- events failed / retry ----------------------------------------------------------------


def test_failed_events_are_listed(site: Site) -> None:
    first, second = failed_event(site, entity="e-1"), failed_event(site, entity="e-2")
    pending_event(site)
    out = json.loads(hg(site.url, "events", "failed", "--json").stdout)
    assert out["total"] == 2
    assert [i["id"] for i in out["items"]] == [str(first), str(second)]
    item = out["items"][0]
    assert {k: item[k] for k in ("kind", "entity_id", "attempts")} == {
        "kind": "bogus.kind",
        "entity_id": "e-1",
        "attempts": events.MAX_ATTEMPTS,
    }
    assert "bogus.kind" in item["last_error"] and item["failed_at"].endswith("+00:00")
    limited = json.loads(hg(site.url, "events", "failed", "--json", "--limit", "1").stdout)
    assert (len(limited["items"]), limited["total"]) == (1, 2)
    human = hg(site.url, "events", "failed")
    assert human.exit_code == 0
    assert [line.split()[0] for line in human.stdout.splitlines()[1:]] == [str(first), str(second)]


def test_no_failed_events_is_an_empty_success(site: Site) -> None:
    result = hg(site.url, "events", "failed")
    assert (result.exit_code, result.stdout) == (0, "")
    assert json.loads(hg(site.url, "events", "failed", "--json").stdout) == {
        "items": [],
        "total": 0,
    }
    assert hg(site.url, "events", "failed", "--limit", "0").exit_code == 2


def test_retry_by_id_puts_only_that_event_back(site: Site) -> None:
    first, second = failed_event(site), failed_event(site)
    result = hg(site.url, "events", "retry", str(first), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"retried": 1}
    assert event_states(site) == {first: ("pending", 0), second: ("failed", events.MAX_ATTEMPTS)}


def test_retry_all(site: Site) -> None:
    ids = [failed_event(site) for _ in range(3)]
    result = hg(site.url, "events", "retry", "--all")
    assert result.exit_code == 0
    assert result.stdout.startswith("retried 3 events")
    assert event_states(site) == {i: ("pending", 0) for i in ids}
    assert json.loads(hg(site.url, "events", "retry", "--all", "--json").stdout) == {"retried": 0}


def test_retry_of_an_unknown_or_unfailed_id_changes_nothing(site: Site) -> None:
    failed, waiting = failed_event(site), pending_event(site)
    before = event_states(site)
    for ids in ([str(failed), "999999"], [str(waiting)], [str(failed), str(waiting)]):
        result = hg(site.url, "events", "retry", *ids)
        assert result.exit_code == 3, (ids, result.output)
        assert "no failed event" in result.stderr
        assert event_states(site) == before


@pytest.mark.parametrize("args", [["abc"], ["12x"], ["0"], [], ["1", "--all"]])
def test_retry_refuses_malformed_input_with_exit_2(site: Site, args: list[str]) -> None:
    failed_event(site)
    before = event_states(site)
    result = hg(site.url, "events", "retry", *args)
    assert result.exit_code == 2, result.output
    assert event_states(site) == before
