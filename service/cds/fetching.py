"""Fetch the prefetch keys a client omitted, from its fhirServer, with its token.

All keys in parallel, following ``next`` links under the same base, within the request's one
outbound deadline (service/fhir_input/fetch.py reads FHIR on service/outbound/). A fhirServer
that is not on FHIR_ALLOWLIST is never called and its token never sent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..config import Settings
from ..fhir_input.fetch import FhirClient
from ..fhirjson import JSON
from ..outbound.allowlist import allowed
from ..outbound.deadline import Deadline
from ..outbound.pool import fetch_all
from .request import HookCall, KeyData

READ_KEYS = frozenset({"patient"})


def is_read(key: str) -> bool:
    """Keys answered by a read (one resource) rather than a search."""
    return key in READ_KEYS or key.startswith("Medication/")


def is_this_service(server: str, public_base_url: str) -> bool:
    """A fhirServer at this service's own base URL (PUBLIC_BASE_URL) is never called: each
    call would hold a worker thread waiting on another of this service's own."""
    server, base = server.rstrip("/").lower(), public_base_url.rstrip("/").lower()
    return server == base or server.startswith(base + "/")


def fetch_keys(call: HookCall, urls: Mapping[str, str], settings: Settings, deadline: Deadline
               ) -> dict[str, KeyData]:
    server = call.fhir_server
    if server is None or not allowed(server, settings.fhir_allowlist) \
            or is_this_service(server, settings.public_base_url):
        return {key: KeyData([], failed=True) for key in urls}
    client = FhirClient(server, call.fhir_token, settings.fhir_allowlist,
                              settings.max_request_bytes)
    def reader(url: str) -> Callable[[], list[JSON]]:
        return lambda: [client.read(url, deadline)]

    def searcher(url: str) -> Callable[[], list[JSON]]:
        return lambda: client.search(url, deadline)

    calls: dict[str, Callable[[], Any]] = {
        key: (reader if is_read(key) else searcher)(url) for key, url in urls.items()
    }
    results = fetch_all(calls, deadline)
    out: dict[str, KeyData] = {}
    for key in urls:
        value = results.get(key)
        if isinstance(value, list):
            resources: list[JSON] = [r for r in value if isinstance(r, dict)]
            out[key] = KeyData(resources, fetched=True)
        else:
            out[key] = KeyData([], failed=True)
    return out
