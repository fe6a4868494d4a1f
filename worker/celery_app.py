"""The Celery application, configured as its docs and ENGINEERING.md advise.

The broker is only a wake-up call: the outbox in the database is the truth. Messages carry
no data, only "there is work"; a poller inside every worker re-dispatches whatever the
broker lost (a Redis restart, the messages a killed worker had reserved).

Settings come from the same sources as the CLI's (flag > environment > config file >
default): `humanglue worker` and `humanglue beat` hand theirs down through the environment,
and `celery -A worker …` started by hand reads the environment and the config file.
"""

from __future__ import annotations

import logging
import ssl
import sys

from celery import Celery

from humanglue_cli.core import schedule
from humanglue_cli.core.errors import HumanGlueError
from humanglue_cli.core.settings import Settings, load_settings


def _settings() -> tuple[Settings, list[schedule.Job]]:
    """The settings, checked now: a bad one is one line and exit 2, not a Celery traceback."""
    try:
        settings = load_settings()
        settings.database_url  # noqa: B018 - validate before any worker starts
        settings.broker_url  # noqa: B018
        jobs = schedule.jobs(settings)
    except HumanGlueError as error:
        print(f"humanglue: {error}", file=sys.stderr)
        raise SystemExit(error.exit_code) from None
    return settings, jobs


settings, jobs = _settings()


def _tls_options(url: str | None) -> dict[str, object] | None:
    if not url or not url.startswith("rediss://") or "ssl_cert_reqs" in url:
        return None
    return {"ssl_cert_reqs": ssl.CERT_REQUIRED}


app = Celery(
    "humanglue",
    broker=settings.broker_url or "redis://127.0.0.1:6379/0",
    include=["worker.tasks"],
)
app.conf.update(
    # TLS (rediss://) verifies the server's certificate unless the URL says otherwise
    # (`?ssl_cert_reqs=none`): kombu's default is not to.
    broker_use_ssl=_tls_options(settings.broker_url),
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    task_ignore_result=True,
    # Early acks. A message carries no data, and a lost one is re-sent by the poller within a
    # second, so re-delivery buys nothing. Late acks on Redis cost two more writes per message,
    # strand a killed worker's message for `visibility_timeout`, and leave in-flight messages
    # to ack through a connection that may be gone (worker/consumer.py).
    task_acks_late=False,
    # One task claims a whole batch from the database; prefetching more only strands messages.
    worker_prefetch_multiplier=1,
    # Redis emulates acks: an unacked message returns after `visibility_timeout`; the poller
    # re-dispatches long before, so it only bounds how long a lost message lingers. Publishing
    # fails fast while the broker is down (the poller re-sends), and every socket has a
    # timeout: a TLS URL pointed at a plaintext Redis fails instead of hanging.
    broker_transport_options={
        "visibility_timeout": 300,
        "socket_connect_timeout": 2,
        "socket_timeout": 5,
        "max_retries": 0,
    },
    broker_connection_retry_on_startup=True,
    broker_connection_max_retries=None,
    # Reconnect within seconds of a broker outage and survive it (worker/consumer.py).
    worker_consumer="worker.consumer:Consumer",
    worker_hijack_root_logger=False,
    task_default_queue="humanglue",
    timezone="UTC",
    # Beat is optional and keeps nothing on disk: the database's claims say what ran.
    beat_scheduler="celery.beat:Scheduler",
)

# Nothing at INFO per task: a busy worker would write two lines per wake-up, an idle one none.
for _name in ("celery.app.trace", "celery.worker.strategy"):
    logging.getLogger(_name).setLevel(logging.WARNING)

# The in-worker poller (worker/poller.py) and the schedule (worker/schedule.py) run in every
# worker, beat or no beat.
from worker.poller import OutboxPoller  # noqa: E402
from worker.schedule import ScheduleStep, beat_entries  # noqa: E402

app.steps["worker"].add(OutboxPoller)
app.steps["worker"].add(ScheduleStep)
app.conf.beat_schedule = beat_entries(jobs)
