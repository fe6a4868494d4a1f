"""The Celery application, configured as its docs and ENGINEERING.md advise.

The broker is only a wake-up call: the outbox in the database is the truth. Messages carry
no data, only "there is work"; a poller inside every worker re-dispatches whatever the
broker lost (a Redis restart, the messages a killed worker had reserved).
"""

from __future__ import annotations

from celery import Celery
from celery.schedules import crontab

from humanglue_cli.core.settings import load_settings

settings = load_settings()

app = Celery(
    "humanglue",
    broker=settings.broker_url or "redis://127.0.0.1:6379/0",
    include=["worker.tasks"],
)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    task_ignore_result=True,
    # Early acks. A message carries no data, and a lost one is re-sent by the poller within a
    # second, so re-delivery buys nothing. Late acks on Redis cost two more writes per message,
    # strand a killed worker's message for `visibility_timeout`, and leave in-flight messages
    # to ack through a connection that may be gone (worker/consumer.py).
    task_acks_late=False,
    worker_cancel_long_running_tasks_on_connection_loss=True,  # no-op without late acks
    # One task claims a whole batch from the database; prefetching more only strands messages.
    worker_prefetch_multiplier=1,
    # Redis emulates acks: an unacked message returns after this. The poller re-dispatches
    # long before, so it only bounds how long a lost message lingers in Redis.
    # Publishing a wake-up fails fast while the broker is down (the poller re-sends every
    # second or two): no reconnect loop inside `send_task`, no long connect to a dead host.
    broker_transport_options={
        "visibility_timeout": 300,
        "socket_connect_timeout": 2,
        "max_retries": 0,
    },
    broker_connection_retry_on_startup=True,
    broker_connection_max_retries=None,
    # Reconnect within seconds of a broker outage and survive it (worker/consumer.py).
    worker_consumer="worker.consumer:Consumer",
    worker_hijack_root_logger=False,
    task_default_queue="humanglue",
    timezone="UTC",
    beat_schedule={
        "sweep": {"task": "humanglue.sweep", "schedule": 10.0},
        "cleanup": {"task": "humanglue.cleanup", "schedule": crontab(minute="17", hour="3")},
    },
)

# The in-worker poller (worker/poller.py) runs in every worker, beat or no beat.
from worker.poller import OutboxPoller  # noqa: E402

app.steps["worker"].add(OutboxPoller)
