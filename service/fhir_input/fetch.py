"""Outbound FHIR client: allow-listed, no redirects, one deadline per request, size-capped.

Used for the orders checked by id (``POST /MedicationRequest/{id}/$check``) and by the CDS
Hooks endpoints to fetch prefetch keys themselves. Rules (interfaces.md section 1,
``FHIR_ALLOWLIST``):

- a URL is called only when its scheme, host, port and path prefix match an allow-listed base
  after normalisation (lower-case scheme and host, default ports, percent-decoding and dot
  segments resolved, prefix on a path-segment boundary); a URL that is not allowed is never
  contacted and never receives the token;
- ``Authorization: Bearer`` is sent only when a token (or an ``Authorizer``: SMART Backend
  Services, service/outbound/) is given, and only to allowed URLs;
- redirects are never followed: a 3xx answer is a failure;
- all the calls made while answering one request share one ``Deadline``: each call's connect
  and read timeouts are the time that remains, and a body still arriving at the deadline is
  abandoned;
- a body larger than ``max_bytes`` is abandoned; JSON is parsed strictly (no NaN/Infinity),
  as request bodies are;
- searches follow ``Bundle.link[next]`` only under the same base (a next link elsewhere fails
  the search rather than answer part of it), and stop on a loop.

Connections are kept alive and reused across requests, per scheme, host and port (and proxy),
in one pool per process; the parallel calls run on one set of worker threads per process. A
process forked from one that used them starts with its own (it never shares its parent's
sockets). A connection that carried a body not read to its end is closed, not reused.

Failures are typed (``FetchFailure.reason``): ``not-allowed``, ``timeout``, ``refused``,
``http-status``, ``redirect``, ``invalid-json``, ``too-large``, ``error``, and ``auth`` (no
access token could be had, or the server refused a fresh one).
"""

from __future__ import annotations

import os
import posixpath
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ALL_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol
from urllib.parse import unquote, urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3 import exceptions as urllib3_errors
from urllib3.exceptions import ProtocolError

from .. import metrics
from ..errors import ServiceError
from ..jsonbody import parse_json_text

FHIR_JSON = "application/fhir+json"
MAX_PAGES = 50
# choice: 16, so that every prefetch key of a hook call (13 today) is read in one wave: with
# 8 the call took two round trips to the FHIR server instead of one (bench/run.py self_fetch).
MAX_PARALLEL = 16
# choice: 128 pooled worker threads per process (and kept-alive connections per host):
# MAX_PARALLEL for each of 8 requests answered at once (``serve`` runs 2 threads per worker by
# default). Threads start only when needed, so a quiet process holds few. A call made while all
# 128 are busy (say, with servers that answer slowly) runs on a thread of its own, so that
# slow servers never make a later request wait for a pooled thread.
MAX_IN_FLIGHT = MAX_PARALLEL * 8
# the headers requests sends by default (User-Agent, Accept-Encoding, Connection); Accept is
# set per call
_BASE_HEADERS = dict(requests.utils.default_headers())


class Authorizer(Protocol):
    """Gives the ``Authorization`` header of calls to one FHIR server (the SMART Backend
    Services client of service/outbound/smart.py)."""

    def authorization(self, deadline: Deadline, refused: str | None = None) -> str:
        """The header value; ``refused``: the value the server just answered ``401`` to (a
        fresh token is needed). Raises FetchFailure (reason ``auth``, ``timeout``)."""
        ...


class Deadline:
    """One budget of seconds for every outbound call made while answering one request."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.seconds = seconds
        self.ends = clock() + seconds

    def remaining(self) -> float:
        return max(0.0, self.ends - self._clock())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0


@dataclass
class FetchFailure(Exception):
    """A failed outbound call. ``url`` never carries a token; ``status`` is the HTTP status
    for ``http-status`` and ``redirect`` failures."""

    reason: str
    url: str
    message: str
    status: int | None = None

    def __str__(self) -> str:
        return self.message


# --- allow-list -------------------------------------------------------------------------------

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class _Origin:
    scheme: str
    host: str
    port: int
    path: str  # normalised, without a trailing slash ("" for the root)


def _normalise(url: str) -> _Origin | None:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    if parts.username is not None or parts.password is not None:
        return None  # credentials in a URL are never used
    path = unquote(parts.path or "/")
    if "\\" in path or "\x00" in path:
        return None
    path = posixpath.normpath("/" + path.lstrip("/"))
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    return _Origin(scheme, parts.hostname.lower().rstrip("."), port or _DEFAULT_PORTS[scheme],
                   "" if path == "/" else path.rstrip("/"))


def allowed(url: str, allowlist: Iterable[str]) -> bool:
    """True when ``url`` is under one of the allow-listed base URLs (see the module docstring).
    """
    target = _normalise(url)
    if target is None:
        return False
    for base in allowlist:
        origin = _normalise(base)
        if origin is None:
            continue
        if (target.scheme, target.host, target.port) != (origin.scheme, origin.host,
                                                         origin.port):
            continue
        if target.path == origin.path or target.path.startswith(origin.path + "/"):
            return True
    return False


# --- connections and threads, one set per process -------------------------------------------------

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
                    # see FhirClient._send for the one retry a kept-alive connection needs)
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


# --- the client -------------------------------------------------------------------------------

class FhirClient:
    """Reads (and, for write-back, writes) one FHIR server within the rules above."""

    def __init__(self, base_url: str, token: str | None, allowlist: Iterable[str],
                 max_bytes: int, auth: Authorizer | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._auth = auth
        self.allowlist = tuple(allowlist)
        self.max_bytes = max_bytes
        self._proxy_cache: dict[tuple[str, str], dict[str, str]] = {}

    def __repr__(self) -> str:  # never shows the token
        return f"FhirClient({self.base_url!r})"

    def _proxies(self, url: str) -> dict[str, str]:
        """The environment's proxies for ``url``, read once per scheme and host for this
        client (the lookup scans the environment twice on every call)."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        if key not in self._proxy_cache:
            self._proxy_cache[key] = requests.utils.get_environ_proxies(url)
        return self._proxy_cache[key]

    def url_for(self, relative_url: str) -> str:
        if relative_url.startswith(("http://", "https://")):
            return relative_url
        return f"{self.base_url}/{relative_url.lstrip('/')}"

    # --- reads --------------------------------------------------------------------------------

    def read(self, relative_url: str, deadline: Deadline) -> dict[str, Any]:
        """GET one resource (``Patient/123``); raises FetchFailure."""
        return self.request("GET", relative_url, deadline, operation="read")

    def search(self, relative_url: str, deadline: Deadline) -> list[dict[str, Any]]:
        """GET a search and every ``next`` page under the same base; returns the resources
        (entries with ``search.mode: outcome`` are left out). Raises FetchFailure."""
        url = self.url_for(relative_url)
        seen: set[str] = set()
        resources: list[dict[str, Any]] = []
        for _ in range(MAX_PAGES):
            seen.add(url)
            page = self.request("GET", url, deadline, operation="search")
            if page.get("resourceType") != "Bundle":
                raise self._fail("invalid-json", url, f"the search {_show(url)} answered a "
                                 f"{page.get('resourceType')}, not a Bundle", "search")
            for entry in page.get("entry") or []:
                if not isinstance(entry, dict):
                    continue
                search = entry.get("search")
                res = entry.get("resource")
                if isinstance(search, dict) and search.get("mode") == "outcome":
                    # choice: an error in the search's own outcome means the results may be
                    # incomplete, so the search failed; warnings (an ignored parameter) only
                    # widen the results and are accepted.
                    if _reports_error(res):
                        raise self._fail("http-status", url, f"the search {_show(url)} "
                                         "reported an error in its outcome", "search")
                    continue
                if isinstance(res, dict) and isinstance(res.get("resourceType"), str):
                    resources.append(res)
            nxt = _next_link(page)
            if nxt is None:
                return resources
            nxt = urljoin(url, nxt)
            if nxt in seen:
                return resources  # a loop: every page has been read
            if not allowed(nxt, (self.base_url,)):
                # choice: the rest of the results is not read, so the search failed (the
                # caller names it as unavailable) rather than answering with part of it
                raise self._fail("not-allowed", nxt, f"the search {_show(url)} continues at "
                                 f"{_show(nxt)}, outside {self.base_url}; not followed",
                                 "search")
            url = nxt
        raise self._fail("too-large", url, f"the search {_show(relative_url)} has more than "
                         f"{MAX_PAGES} pages; not read to the end", "search")

    # --- writes (write-back) --------------------------------------------------------------------

    def transaction(self, bundle: dict[str, Any], deadline: Deadline) -> dict[str, Any]:
        """POST a transaction Bundle to the base; returns the transaction-response Bundle."""
        return self.request("POST", self.base_url, deadline, body=bundle,
                            operation="transaction")

    # --- one HTTP call --------------------------------------------------------------------------

    def request(self, method: str, relative_url: str, deadline: Deadline,
                body: Mapping[str, Any] | None = None, operation: str = "read"
                ) -> dict[str, Any]:
        """One FHIR call. With an ``Authorizer`` (SMART Backend Services), a ``401`` answer
        gets one fresh token and the call is sent once more; a second ``401`` is an ``auth``
        failure."""
        url = self.url_for(relative_url)
        refused: str | None = None
        while True:
            headers = {"Accept": FHIR_JSON}
            if self._auth is not None and allowed(url, self.allowlist):
                headers["Authorization"] = self._auth.authorization(deadline, refused)
            elif self._token:
                headers["Authorization"] = f"Bearer {self._token}"
            status, raw = self.exchange(method, url, deadline, headers, operation,
                                        json_body=body, counted=refused is not None)
            if status == 401 and self._auth is not None:
                if refused is None:
                    refused = headers["Authorization"]
                    continue
                raise self._fail("auth", url, f"{_show(url)} refused a fresh access token "
                                 "(HTTP 401)", operation, status)
            if not 200 <= status < 300:
                raise self._fail("http-status", url, f"{_show(url)} answered HTTP "
                                 f"{status}", operation, status)
            return self._fhir(raw, url, operation)

    def exchange(self, method: str, url: str, deadline: Deadline, headers: Mapping[str, str],
                 operation: str, json_body: Mapping[str, Any] | None = None,
                 form: Mapping[str, str] | None = None, counted: bool = False,
                 error_body_bytes: int = 0, count_failures: bool = True
                 ) -> tuple[int, bytes]:
        """One HTTP call within the rules above (allow-list, deadline, no redirect, size cap);
        returns the status and the body. A body is read for a 2xx answer, and for any other
        status up to ``error_body_bytes`` (0: not read). ``counted``: a repeat of a call
        already counted in ``baclofen_check_outbound_fhir_calls_total``;
        ``count_failures=False``: the caller counts the failure under its own reason. Raises
        FetchFailure."""
        fail = self._fail if count_failures else _failure
        if not allowed(url, self.allowlist):
            raise fail("not-allowed", url, f"{_show(url)} is not in FHIR_ALLOWLIST", operation)
        if deadline.expired:
            raise fail("timeout", url, f"no time was left to call {_show(url)}", operation)
        if not counted:
            metrics.OUTBOUND.labels(operation).inc()
        all_headers = {**_BASE_HEADERS, **headers}
        if json_body is not None:
            all_headers["Content-Type"] = FHIR_JSON
        try:
            prepared = requests.Request(method, url, headers=all_headers, json=json_body,
                                        data=form).prepare()
            with self._send(prepared, url, deadline) as resp:
                status = resp.status_code
                if 300 <= status < 400:
                    raise fail("redirect", url, f"{_show(url)} answered a redirect ({status}), "
                               "which is not followed", operation, status)
                if 200 <= status < 300:
                    return status, self._read(resp, url, deadline, operation, self.max_bytes,
                                              count_failures)
                if error_body_bytes <= 0:
                    return status, b""
                try:
                    return status, self._read(resp, url, deadline, operation,
                                              error_body_bytes, count=False)
                except FetchFailure:
                    return status, b""
        except requests.Timeout as exc:
            raise fail("timeout", url, f"{_show(url)} did not answer within the "
                       f"{deadline.seconds:g} s deadline", operation) from exc
        except requests.ConnectionError as exc:
            raise fail("refused", url, f"{_show(url)} could not be reached",
                       operation) from exc
        except requests.RequestException as exc:
            raise fail("error", url, f"{_show(url)} failed: {type(exc).__name__}",
                       operation) from exc

    def _send(self, prepared: requests.PreparedRequest, url: str, deadline: Deadline
              ) -> requests.Response:
        """Send on a kept-alive connection of this process's pool (no redirect followed, no
        cookies, no .netrc; the environment's proxies); the response body is streamed.

        choice: a GET whose connection closed before any answer is sent once more on a new
        connection, while time is left: a server may close an idle kept-alive connection at
        the moment it is reused, and a read is safe to repeat. Nothing else is retried (a
        refused connection, a timeout, a write).
        """
        retried = False
        while True:
            remaining = deadline.remaining()
            try:
                return _shared.get_adapter().send(prepared, stream=True,
                                                  timeout=(remaining, remaining),
                                                  proxies=self._proxies(url))
            except requests.ConnectionError as exc:
                cause = exc.args[0] if exc.args else None
                if (retried or prepared.method != "GET" or not isinstance(cause, ProtocolError)
                        or deadline.expired):
                    raise
                retried = True

    def _read(self, resp: requests.Response, url: str, deadline: Deadline, operation: str,
              max_bytes: int, count: bool = True) -> bytes:
        """The body, read as it comes, within the deadline and ``max_bytes``."""
        fail = self._fail if count else _failure
        length = resp.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > max_bytes:
            raise fail("too-large", url, f"{_show(url)} answered {length} bytes, more "
                       f"than the {max_bytes} allowed", operation)
        chunks: list[bytes] = []
        size = 0
        stream = resp.raw
        while True:
            # what has come so far, at once: a server sending its body slowly is cut off at
            # the deadline (a read that waits for a full 64 KiB would outlive it)
            remaining = deadline.remaining()
            if remaining <= 0:
                raise fail("timeout", url, f"{_show(url)} was still answering at the "
                           f"{deadline.seconds:g} s deadline", operation)
            _wait_at_most(stream, remaining)
            try:
                chunk = stream.read1(65536, decode_content=True)
            except urllib3_errors.ReadTimeoutError as exc:
                raise fail("timeout", url, f"{_show(url)} was still answering at the "
                           f"{deadline.seconds:g} s deadline", operation) from exc
            except urllib3_errors.HTTPError as exc:
                raise fail("error", url, f"{_show(url)} failed while answering: "
                           f"{type(exc).__name__}", operation) from exc
            if not chunk:
                break
            size += len(chunk)
            if size > max_bytes:
                raise fail("too-large", url, f"{_show(url)} answered more than "
                           f"{max_bytes} bytes", operation)
            chunks.append(chunk)
        return b"".join(chunks)

    def _fhir(self, raw: bytes, url: str, operation: str) -> dict[str, Any]:
        try:
            value = parse_json_text(raw)
        except ServiceError as exc:
            raise self._fail("invalid-json", url, f"{_show(url)} answered invalid JSON: "
                             f"{exc}", operation) from exc
        if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
            raise self._fail("invalid-json", url, f"{_show(url)} did not answer a FHIR "
                             "resource", operation)
        return value

    @staticmethod
    def _fail(reason: str, url: str, message: str, operation: str,
              status: int | None = None) -> FetchFailure:
        metrics.OUTBOUND_FAILURES.labels(operation, reason).inc()
        return FetchFailure(reason, url, message, status)


def _failure(reason: str, url: str, message: str, operation: str,
             status: int | None = None) -> FetchFailure:
    """A FetchFailure not counted in the metrics (the caller counts what it reports)."""
    return FetchFailure(reason, url, message, status)


def _wait_at_most(stream: Any, seconds: float) -> None:
    """Make the next socket read of a streamed response wait no longer than ``seconds`` (the
    read timeout given when the request was sent is what was left of the deadline then)."""
    sock = getattr(getattr(stream, "connection", None), "sock", None)
    if sock is not None:
        sock.settimeout(max(seconds, 0.001))


def _show(url: str) -> str:
    """A URL for messages: without query string (search values can hold clinical codes)."""
    return url.split("?", 1)[0]


def _reports_error(resource: Any) -> bool:
    if not isinstance(resource, dict) or resource.get("resourceType") != "OperationOutcome":
        return False
    issues = resource.get("issue")
    return isinstance(issues, list) and any(
        isinstance(i, dict) and i.get("severity") in ("error", "fatal") for i in issues)


def _next_link(page: Mapping[str, Any]) -> str | None:
    for link in page.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next":
            url = link.get("url")
            if isinstance(url, str) and url:
                return url
    return None


# --- several calls in parallel ------------------------------------------------------------------

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
