"""The outbound calls' connections and threads, one set per process.

Connections are kept alive and reused across requests, per scheme, host and port (and proxy),
in one pool per process; the parallel calls run on one set of worker threads per process. A
process forked from one that used them starts with its own (it never shares its parent's
sockets).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ALL_COMPLETED, Future, ThreadPoolExecutor, wait
from functools import partial
from typing import Any

from requests.adapters import HTTPAdapter

from .deadline import Deadline, FetchFailure

# choice: 16, so that every prefetch key of a hook call (13 today) is read in one wave: with
# 8 the call took two round trips to the FHIR server instead of one (bench/run.py self_fetch).
MAX_PARALLEL = 16
# choice: 128 pooled worker threads per process (and kept-alive connections per host):
# MAX_PARALLEL for each of 8 requests answered at once (``serve`` runs 2 threads per worker by
# default). Threads start only when needed, so a quiet process holds few. A call made while all
# 128 are busy (say, with servers that answer slowly) runs on a thread of its own, so that
# slow servers never make a later request wait for a pooled thread.
MAX_IN_FLIGHT = MAX_PARALLEL * 8


class _Shared:
    """The kept-alive connection pools and the worker threads of this process, made on first
    use."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.adapter: HTTPAdapter | None = None
        self.executor: ThreadPoolExecutor | None = None
        self.busy = 0  # calls submitted and not finished

    def get_adapter(self) -> HTTPAdapter:
        adapter = self.adapter
        if adapter is None:
            with self.lock:
                if self.adapter is None:
                    # max_retries=0: requests' default (a refused connection is not retried;
                    # see HttpClient._send for the one retry a kept-alive connection needs)
                    self.adapter = HTTPAdapter(pool_connections=16,
                                               pool_maxsize=MAX_IN_FLIGHT, max_retries=0)
                adapter = self.adapter
        return adapter

    def get_executor(self) -> ThreadPoolExecutor:
        executor = self.executor
        if executor is None:
            with self.lock:
                if self.executor is None:
                    self.executor = ThreadPoolExecutor(max_workers=MAX_IN_FLIGHT,
                                                       thread_name_prefix="fhir-fetch")
                executor = self.executor
        return executor

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run ``fn`` on a pooled thread, or on a thread of its own when every pooled thread
        is busy (never queued behind calls that may be stuck on a slow server)."""
        with self.lock:
            alone = self.busy >= MAX_IN_FLIGHT
            self.busy += 1
        if not alone:
            try:
                pooled = self.get_executor().submit(fn)
            except BaseException:
                self._finished(None)
                raise
            pooled.add_done_callback(self._finished)  # also when cancelled while queued
            return pooled
        future: Future[Any] = Future()

        def run_alone() -> None:
            try:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn())
                    except BaseException as exc:  # as the pool does: the caller sees it
                        future.set_exception(exc)
            finally:
                self._finished(future)

        threading.Thread(target=run_alone, name="fhir-fetch-extra", daemon=True).start()
        return future

    def _finished(self, _future: Future[Any] | None) -> None:
        with self.lock:
            self.busy -= 1


_shared = _Shared()


def _forget_after_fork() -> None:
    """In a forked child: new pools and threads. The parent's sockets stay the parent's (they
    are neither used nor closed here) and its threads do not exist in the child."""
    global _shared
    _shared = _Shared()


os.register_at_fork(after_in_child=_forget_after_fork)


def adapter() -> HTTPAdapter:
    """This process's kept-alive connection pools."""
    return _shared.get_adapter()


def fetch_all(calls: Mapping[str, Callable[[], Any]], deadline: Deadline
              ) -> dict[str, Any | FetchFailure]:
    """Run the calls in parallel (at most MAX_PARALLEL at once, on this process's worker
    threads); return each one's value or its FetchFailure, in the order given. A call still
    running (or not started) at the deadline is reported as a ``timeout`` failure (its thread
    ends by itself: every call's timeouts are bounded by the same deadline)."""
    if not calls:
        return {}
    shared = _shared
    slots = threading.BoundedSemaphore(MAX_PARALLEL)  # this request's share of the threads

    def run(call: Callable[[], Any]) -> Any:
        try:
            return call()
        finally:
            slots.release()

    futures: dict[str, Future[Any]] = {}
    for name, call in calls.items():
        if not slots.acquire(timeout=deadline.remaining()):
            break  # the deadline passed waiting for a free slot: the rest are timeouts
        futures[name] = shared.submit(partial(run, call))
    wait(futures.values(), timeout=deadline.remaining() + 0.05, return_when=ALL_COMPLETED)
    for queued in futures.values():
        queued.cancel()  # one still queued never starts (one running or done is not affected)
    results: dict[str, Any | FetchFailure] = {}
    for name in calls:
        future = futures.get(name)
        if future is None or not future.done() or future.cancelled():
            results[name] = FetchFailure("timeout", "", f"{name} did not finish within the "
                                         f"{deadline.seconds:g} s deadline")
            continue
        error = future.exception()
        if error is None:
            results[name] = future.result()
        elif isinstance(error, FetchFailure):
            results[name] = error
        else:
            results[name] = FetchFailure("error", "", f"{name} failed: "
                                         f"{type(error).__name__}")
    return results
