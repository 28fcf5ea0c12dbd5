"""The outbound HTTP client: the service's calls to FHIR servers (reads, searches, writes) and
to SMART token endpoints go through ``HttpClient.exchange`` (the JWKS reads of
service/cds/tokens.py are allow-listed by CDS_TRUSTED_ISSUERS and use their own).

- a URL is called only when it is under the allow-list (service/outbound/allowlist.py);
- ``Authorization`` is sent only as the caller gives it, and only to allowed URLs;
- redirects are never followed: a 3xx answer is a failure;
- all the calls made while answering one request share one ``Deadline``: each call's connect
  and read timeouts are the time that remains, and a body still arriving at the deadline is
  abandoned;
- a body larger than ``max_bytes`` is abandoned;
- connections come from this process's pool (service/outbound/pool.py); a connection that
  carried a body not read to its end is closed, not reused.

FHIR on top of it (reads, searches and their pages, transactions, strict JSON answers) is
service/fhir_input/fetch.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests
from urllib3 import exceptions as urllib3_errors
from urllib3.exceptions import ProtocolError

from .. import metrics
from . import pool
from .allowlist import allowed
from .deadline import Deadline, FetchFailure

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


class HttpClient:
    """Outbound HTTP calls within the rules above."""

    json_type = "application/json"   # the Content-Type of a JSON body

    def __init__(self, allowlist: Iterable[str], max_bytes: int) -> None:
        self.allowlist = tuple(allowlist)
        self.max_bytes = max_bytes
        self._proxy_cache: dict[tuple[str, str], dict[str, str]] = {}

    def _proxies(self, url: str) -> dict[str, str]:
        """The environment's proxies for ``url``, read once per scheme and host for this
        client (the lookup scans the environment twice on every call)."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        if key not in self._proxy_cache:
            self._proxy_cache[key] = requests.utils.get_environ_proxies(url)
        return self._proxy_cache[key]

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
            raise fail("not-allowed", url, f"{show(url)} is not in FHIR_ALLOWLIST", operation)
        if deadline.expired:
            raise fail("timeout", url, f"no time was left to call {show(url)}", operation)
        if not counted:
            metrics.OUTBOUND.labels(operation).inc()
        all_headers = {**_BASE_HEADERS, **headers}
        if json_body is not None:
            all_headers["Content-Type"] = self.json_type
        try:
            prepared = requests.Request(method, url, headers=all_headers, json=json_body,
                                        data=form).prepare()
            with self._send(prepared, url, deadline) as resp:
                status = resp.status_code
                if 300 <= status < 400:
                    raise fail("redirect", url, f"{show(url)} answered a redirect ({status}), "
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
            raise fail("timeout", url, f"{show(url)} did not answer within the "
                       f"{deadline.seconds:g} s deadline", operation) from exc
        except requests.ConnectionError as exc:
            raise fail("refused", url, f"{show(url)} could not be reached",
                       operation) from exc
        except requests.RequestException as exc:
            raise fail("error", url, f"{show(url)} failed: {type(exc).__name__}",
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
                return pool.adapter().send(prepared, stream=True,
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
            raise fail("too-large", url, f"{show(url)} answered {length} bytes, more "
                       f"than the {max_bytes} allowed", operation)
        chunks: list[bytes] = []
        size = 0
        stream = resp.raw
        while True:
            # what has come so far, at once: a server sending its body slowly is cut off at
            # the deadline (a read that waits for a full 64 KiB would outlive it)
            remaining = deadline.remaining()
            if remaining <= 0:
                raise fail("timeout", url, f"{show(url)} was still answering at the "
                           f"{deadline.seconds:g} s deadline", operation)
            _wait_at_most(stream, remaining)
            try:
                chunk = stream.read1(65536, decode_content=True)
            except urllib3_errors.ReadTimeoutError as exc:
                raise fail("timeout", url, f"{show(url)} was still answering at the "
                           f"{deadline.seconds:g} s deadline", operation) from exc
            except urllib3_errors.HTTPError as exc:
                raise fail("error", url, f"{show(url)} failed while answering: "
                           f"{type(exc).__name__}", operation) from exc
            if not chunk:
                break
            size += len(chunk)
            if size > max_bytes:
                raise fail("too-large", url, f"{show(url)} answered more than "
                           f"{max_bytes} bytes", operation)
            chunks.append(chunk)
        return b"".join(chunks)

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


def show(url: str) -> str:
    """A URL for messages: without query string (search values can hold clinical codes)."""
    return url.split("?", 1)[0]
