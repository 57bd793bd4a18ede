"""The dispatcher: one notification in, one stored delivery per receiver out."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from rules.alert import Notification
from rules.routing import Router
from rules.webhook import build_body

# Stores (receiver, fingerprint, body) deliveries created at a time, all or none: their ids.
# The deliverer's `enqueue` (which may start them at once), or an outbox's `enqueue_many`.
Enqueue = Callable[[Sequence[tuple[str, str, bytes]], int], list[str]]


class Dispatcher:
    """Routes a notification by its labels (and to whoever was told of its alert before) and
    enqueues one delivery per receiver.

    Bodies are built here, at enqueue time, so every retry sends the same bytes; only the
    timestamp and signature headers are made per attempt. Blocking: one outbox transaction
    (called in the delivering loop, the deliverer's `enqueue` starts the attempts at once).
    """

    def __init__(
        self,
        router: Router,
        enqueue: Enqueue,
        external_url: str,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._router = router
        self._enqueue = enqueue
        self._external_url = external_url
        self._clock_ns = clock_ns

    def dispatch(self, notification: Notification) -> dict[str, str]:
        """Enqueue the notification for each of its receivers: those its labels route to,
        and those of `also_to`. The delivery id of each, by receiver name, in that order:
        the book keeps the names (`AlertBook`'s `send`), a test the ids."""
        receivers = self._router.receivers_for(notification.labels, notification.also_to)
        if not receivers:
            return {}
        items = [
            (receiver.name, notification.fingerprint,
             build_body(notification, receiver.name, self._external_url))
            for receiver in receivers
        ]
        # One transaction: a crash leaves every receiver's delivery stored, or none.
        ids = self._enqueue(items, self._clock_ns())
        return {receiver.name: delivery_id
                for receiver, delivery_id in zip(receivers, ids, strict=True)}
