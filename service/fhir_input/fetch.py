"""Outbound FHIR: reads, searches and transactions on one FHIR server, on the outbound HTTP
client (service/outbound/: allow-list, pool, deadline, no redirects, size cap).

Used for the orders checked by id (``POST /MedicationRequest/{id}/$check``), write-back, the
watch, and by the CDS Hooks endpoints to fetch prefetch keys themselves.

- ``Authorization: Bearer`` is sent only when a token (or an ``Authorizer``: SMART Backend
  Services, service/outbound/smart.py) is given, and only to allowed URLs; with an
  ``Authorizer``, a ``401`` gets one fresh token and the call is sent once more;
- an answer must be a FHIR resource, parsed strictly (no NaN/Infinity), as request bodies are
  (service/jsonbody.py);
- searches follow ``Bundle.link[next]`` only under the same base (a next link elsewhere fails
  the search rather than answer part of it), and stop on a loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urljoin

from ..config import Settings
from ..errors import ServiceError
from ..jsonbody import parse_json_text
from ..outbound import fhir_server_authorizer, server_token
from ..outbound.allowlist import allowed
from ..outbound.client import Authorizer, HttpClient, show
from ..outbound.deadline import Deadline

FHIR_JSON = "application/fhir+json"
MAX_PAGES = 50


class FhirClient(HttpClient):
    """Reads (and, for write-back, writes) one FHIR server within the rules above."""

    json_type = FHIR_JSON

    def __init__(self, base_url: str, token: str | None, allowlist: Iterable[str],
                 max_bytes: int, auth: Authorizer | None = None) -> None:
        super().__init__(allowlist, max_bytes)
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._auth = auth

    def __repr__(self) -> str:  # never shows the token
        return f"FhirClient({self.base_url!r})"

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
                raise self._fail("invalid-json", url, f"the search {show(url)} answered a "
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
                        raise self._fail("http-status", url, f"the search {show(url)} "
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
                raise self._fail("not-allowed", nxt, f"the search {show(url)} continues at "
                                 f"{show(nxt)}, outside {self.base_url}; not followed",
                                 "search")
            url = nxt
        raise self._fail("too-large", url, f"the search {show(relative_url)} has more than "
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
                raise self._fail("auth", url, f"{show(url)} refused a fresh access token "
                                 "(HTTP 401)", operation, status)
            if not 200 <= status < 300:
                raise self._fail("http-status", url, f"{show(url)} answered HTTP "
                                 f"{status}", operation, status)
            return self._fhir(raw, url, operation)

    def _fhir(self, raw: bytes, url: str, operation: str) -> dict[str, Any]:
        try:
            value = parse_json_text(raw)
        except ServiceError as exc:
            raise self._fail("invalid-json", url, f"{show(url)} answered invalid JSON: "
                             f"{exc}", operation) from exc
        if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
            raise self._fail("invalid-json", url, f"{show(url)} did not answer a FHIR "
                             "resource", operation)
        return value


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


def fhir_server_client(settings: Settings) -> FhirClient:
    """The client for every call the service makes to FHIR_SERVER_URL (its authorization:
    FHIR_SERVER_AUTH, service/outbound/)."""
    if settings.fhir_server_url is None:
        raise ValueError("FHIR_SERVER_URL is not configured")
    return FhirClient(settings.fhir_server_url, server_token(settings),
                      settings.fhir_allowlist, settings.max_request_bytes,
                      auth=fhir_server_authorizer(settings))
