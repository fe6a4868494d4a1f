"""Celery's task consumer, made to ride out a Redis restart (celery 5.7, kombu 5.7, redis-py 8).

Two fixes, both measured by tests/test_worker_celery.py:

1. Reconnect within two seconds. Celery hands the consumer's reconnect to kombu's
   `ensure_connection` with its defaults — waits of 2, 4, 6 … up to 30 s between attempts,
   with no setting to change them — so after a Redis outage of a minute the worker would sit
   up to 30 s more before consuming again. We wait 0.5 s, 1 s, 1.5 s, then every 2 s.

2. Do not die of a message still unacked when the connection drops. Celery's
   `on_connection_error_after_connected` collects the lost connection (which detaches its
   transport) and then closes it; the channel, whose close was cut short while it waited on
   BRPOP, now tries to restore its unacked messages through the detached transport, and any
   later ack of such a message goes the same way: `AttributeError: 'NoneType' object has no
   attribute 'hostname'` (or `'client'`), "Unrecoverable error", and the worker exits. A
   plain Celery app with one task in flight during a Redis restart reproduces it. So before
   Celery closes the lost connection we make its channel forget those messages: there is
   nothing to restore or ack through a connection that is gone (Redis restores unacked
   messages itself after `visibility_timeout`, or lost them in a restart), and our messages
   are only wake-ups that the poller sends again.
"""

from __future__ import annotations

import functools
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer

RECONNECT = {"interval_start": 0.5, "interval_step": 0.5, "interval_max": 2.0}


class Consumer(CeleryConsumer):
    def ensure_connected(self, conn: Any) -> Any:
        conn.ensure_connection = functools.partial(conn.ensure_connection, **RECONNECT)
        return super().ensure_connected(conn)

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        _forget_unacked(getattr(self.connection, "_default_channel", None))
        super().on_connection_error_after_connected(exc)


def _forget_unacked(channel: Any) -> None:
    """No restore at close, and acks of its messages become no-ops: the connection is gone."""
    if channel is None:
        return
    channel.do_restore = False
    qos = getattr(channel, "_qos", None)
    if qos is not None:
        qos.ack = qos.reject = lambda *_args, **_kwargs: None
