"""The process-wide budget of concurrent nmap processes, shared by every scan in a process.

Target groups run in parallel (services/supervisor.py), each scan runs up to
`[scan].workers` nmap processes, and a cycle's confirm re-probes and `-sV` runs start more:
without one limit over all of them, a daemon with several groups could start dozens of nmap
at once. `BUDGET` is that limit, a counting semaphore with a cancel: `nmap_process
.run_process` takes a slot before it starts a process and gives it back when the process
has ended (`limited`), so every nmap this process starts is counted, whichever group or
command started it.

Slots are shared between scans, not only counted. A slot is taken on behalf of an owner (a
scan: the cancel object its nmap runs watch), and an owner may hold at most the limit
minus the number of other owners holding or waiting, and never the last free slot alone:
a slow group's long nmap runs (UDP, `-sV`) cannot take every slot, so another group's next
nmap starts at once instead of waiting for one of them to end. Among the waiters that are
within their share, the first come goes first.

The limit is `[scan].max_nmap_processes`; 0 (automatic) is the CPU count, at least 4 and
at least `[scan].workers` + 1 (one scan alone keeps all its workers and one slot is left for
another group). `configure` applies it when a Monitor is created; the last one is in force.
"""

from __future__ import annotations

import functools
import os
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any, ParamSpec, Protocol, TypeVar

# How often a waiter looks at its cancel: the same poll as a running nmap's.
POLL_SECONDS = 0.1
MIN_AUTOMATIC = 4

P = ParamSpec("P")
R = TypeVar("R")


class Cancellable(Protocol):
    def is_set(self) -> bool: ...


def automatic_limit(workers: int = 1) -> int:
    """The default budget: the CPU count, at least MIN_AUTOMATIC and `workers` + 1."""
    return max(MIN_AUTOMATIC, os.cpu_count() or 1, workers + 1)


class NmapBudget:
    """At most `limit` slots held at once, shared fairly between owners (see the docstring)."""

    def __init__(self, limit: int) -> None:
        self._limit = _checked(limit)
        self._held: Counter[int] = Counter()
        self._queue: list[tuple[object, int]] = []
        self._peak = 0
        self._cond = threading.Condition()

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def in_use(self) -> int:
        """Slots held now (nmap processes running or about to start)."""
        with self._cond:
            return self._held.total()

    @property
    def waiting(self) -> int:
        """Callers waiting for a slot now."""
        with self._cond:
            return len(self._queue)

    @property
    def peak(self) -> int:
        """The most slots held at once since the last `reset_peak`."""
        with self._cond:
            return self._peak

    def reset_peak(self) -> None:
        with self._cond:
            self._peak = self._held.total()

    def set_limit(self, limit: int) -> None:
        """Change the limit; slots already held are kept (a lower limit applies as they end)."""
        with self._cond:
            self._limit = _checked(limit)
            self._cond.notify_all()

    def share(self, owner: object) -> int:
        """How many slots `owner` may hold now."""
        with self._cond:
            return self._share(id(owner))

    def _share(self, key: int) -> int:
        others = {k for k, n in self._held.items() if n > 0} | {k for _, k in self._queue}
        others.discard(key)
        return max(1, self._limit - max(1, len(others)))

    def _next(self) -> object | None:
        """The ticket to serve now: the first waiter within its share, if a slot is free."""
        if self._held.total() >= self._limit:
            return None
        for ticket, key in self._queue:
            if self._held[key] < self._share(key):
                return ticket
        return None

    def acquire(self, cancel: Cancellable | None = None, owner: object = None) -> bool:
        """Wait for a slot for `owner` (default: `cancel`, i.e. one scan); False, and no
        slot, if `cancel` is set first."""
        key = id(owner if owner is not None else cancel)
        ticket = object()
        with self._cond:
            self._queue.append((ticket, key))
            try:
                while self._next() is not ticket:
                    if cancel is not None and cancel.is_set():
                        return False
                    self._cond.wait(POLL_SECONDS)
                self._held[key] += 1
                self._peak = max(self._peak, self._held.total())
                return True
            finally:
                self._queue.remove((ticket, key))
                self._cond.notify_all()  # the next waiter may go now

    def release(self, cancel: Cancellable | None = None, owner: object = None) -> None:
        """Give back a slot taken with the same `cancel`/`owner`."""
        key = id(owner if owner is not None else cancel)
        with self._cond:
            if self._held[key] <= 0:
                raise RuntimeError("an nmap slot was released that was never taken")
            self._held[key] -= 1
            if not self._held[key]:
                del self._held[key]
            self._cond.notify_all()


def _checked(limit: int) -> int:
    if limit < 1:
        raise ValueError("the nmap budget needs at least one slot")
    return limit


BUDGET = NmapBudget(automatic_limit())


def configure(limit: int, workers: int = 1) -> None:
    """Apply `[scan].max_nmap_processes` (0: automatic for `workers`) to this process."""
    BUDGET.set_limit(limit if limit > 0 else automatic_limit(workers))


def limited(on_cancel: Callable[[], R]) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate the function that runs one process: it runs holding a slot of `BUDGET`.

    The function's second argument, `cancel` (a Cancellable or None), is watched while
    waiting and names the owner (the scan); a cancel before a slot is free returns
    `on_cancel()` without calling the function.
    """

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            cancel: Any = kwargs.get("cancel", args[1] if len(args) > 1 else None)
            if not BUDGET.acquire(cancel):
                return on_cancel()
            try:
                return function(*args, **kwargs)
            finally:
                BUDGET.release(cancel)

        return wrapper

    return decorate
