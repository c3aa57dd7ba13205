"""Background delivery: a thread that delivers the outbox's due messages every few seconds.

The outbox and its delivery are adapters/notify.py's Notifier; this thread only calls it
(`deliver_due`), at once when woken after a scan has queued messages.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from portconsole.core.adapters.notify import Notifier

log = logging.getLogger("portconsole.core.adapters.notify")


class DeliveryWorker(threading.Thread):
    """Calls `deliver_due` every `interval` seconds until `stop_event` is set.

    `wake()` delivers at once (after a scan has enqueued messages). Errors are logged (masked)
    and kept in `last_error`; the loop goes on.
    """

    def __init__(
        self, notifier: Notifier, stop_event: threading.Event, interval: float = 5.0
    ) -> None:
        super().__init__(name="portconsole-delivery", daemon=True)
        self.notifier = notifier
        self.stop_event = stop_event
        self.interval = interval
        self.last_error: str | None = None
        self.rounds = 0
        self._wake = threading.Event()

    def wake(self) -> None:
        self._wake.set()

    def run(self) -> None:
        while not self.stop_event.is_set():
            self._wake.clear()
            try:
                self.notifier.deliver_due(deadline=time.monotonic() + self.interval)
                self.last_error = None
            except Exception as error:
                self.last_error = self.notifier.mask(f"{error.__class__.__name__}: {error}")
                log.warning("notification delivery failed: %s", self.last_error)
            self.rounds += 1
            waited = 0.0
            # Poll the stop event too: it belongs to the caller, so it cannot wake us itself.
            while waited < self.interval and not self.stop_event.is_set():
                if self._wake.wait(min(0.1, self.interval - waited)):
                    break
                waited += 0.1


__all__ = ["DeliveryWorker"]
