"""The dispatcher: one notification in, one stored delivery per receiver out."""

from __future__ import annotations

import time
from collections.abc import Callable

from rules.alert import Notification
from rules.outbox import Outbox
from rules.routing import Router
from rules.webhook import build_body


class Dispatcher:
    """Routes a notification by its labels (and to whoever was told of its alert before) and
    enqueues one delivery per receiver.

    Bodies are built here, at enqueue time, so every retry sends the same bytes; only the
    timestamp and signature headers are made per attempt. Blocking (one SQLite commit):
    from async code call `dispatch` through `asyncio.to_thread`.
    """

    def __init__(
        self,
        router: Router,
        outbox: Outbox,
        deliverer_wakeup: Callable[[], None],
        external_url: str,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._router = router
        self._outbox = outbox
        self._wakeup = deliverer_wakeup
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
        ids = self._outbox.enqueue_many(items, self._clock_ns())
        self._wakeup()
        return {receiver.name: delivery_id
                for receiver, delivery_id in zip(receivers, ids, strict=True)}
