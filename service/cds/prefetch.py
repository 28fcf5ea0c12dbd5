"""Prefetch: fill the templates' tokens, take what the client sent, fetch the rest.

A key the client sent as ``null`` means "nothing there"; an OperationOutcome means the client
tried and failed (no second fetch: the key is unavailable). Every omitted key is fetched from
``fhirServer`` with the client's token, all keys in parallel, within one deadline. A
``fhirServer`` that is not on FHIR_ALLOWLIST is never called and its token never sent: its keys
are unavailable.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from ..outbound.allowlist import allowed
from .request import HookCall, KeyData, read_prefetch_value

_TOKEN = re.compile(r"\{\{\s*([A-Za-z0-9_.]+)\s*\}\}")

# Fetch omitted keys: (the call, key -> relative URL) -> key -> KeyData.
Fetcher = Callable[[HookCall, Mapping[str, str]], dict[str, KeyData]]


def token_values(call: HookCall) -> dict[str, str]:
    """The values prefetch tokens may name (CDS Hooks 2.0: context fields and the user)."""
    values = {f"context.{k}": v for k, v in call.context.items() if isinstance(v, str)}
    user = call.user_id or ""
    kind, _, uid = user.partition("/")
    if uid:
        values[f"user{kind}Id"] = uid
    return values


def render(template: str, values: Mapping[str, str]) -> str | None:
    """The query with its tokens filled (URL-escaped), or None when a token has no value."""
    missing = False

    def fill(m: re.Match[str]) -> str:
        nonlocal missing
        value = values.get(m.group(1))
        if value is None:
            missing = True
            return ""
        return quote(value, safe="-._~")

    text = _TOKEN.sub(fill, template)
    return None if missing else text


def gather(call: HookCall, templates: Mapping[str, str], fetcher: Fetcher | None
           ) -> dict[str, KeyData]:
    """Every template key's data: from the prefetch when the client sent the key, else
    fetched. Keys that cannot be had are marked failed."""
    values = token_values(call)
    data: dict[str, KeyData] = {}
    to_fetch: dict[str, str] = {}
    more: dict[str, str] = {}
    for key, template in templates.items():
        if key in call.prefetch:
            data[key] = read_prefetch_value(key, call.prefetch[key])
            if data[key].next_url:
                more[key] = str(data[key].next_url)
            continue
        url = render(template, values)
        if url is None:
            data[key] = KeyData([], failed=True)
        else:
            to_fetch[key] = url
    # choice: a prefetched search that the client cut to its first page is completed from
    # fhirServer (the next link must lie under it); when it cannot be, the key is reported as
    # unavailable, since what the rules need may be on the pages not sent.
    pages = {key: url for key, url in more.items() if _under(url, call.fhir_server)}
    wanted = {**to_fetch, **pages}
    if wanted:
        fetched = fetcher(call, wanted) if fetcher and call.fhir_server else {}
        for key in to_fetch:
            data[key] = fetched.get(key, KeyData([], failed=True))
        for key in pages:
            rest = fetched.get(key, KeyData([], failed=True))
            data[key] = KeyData(data[key].resources + rest.resources, failed=rest.failed)
    for key in more:
        if key not in pages:
            data[key] = KeyData(data[key].resources, failed=True)
    return {key: data[key] for key in templates}


def _under(url: str, base: str | None) -> bool:
    if base is None:
        return False
    return allowed(url, (base,))


def sent_keys(call: HookCall) -> list[str]:
    """The prefetch keys the client sent (for the record)."""
    return sorted(k for k in call.prefetch if isinstance(k, str))


def describe(data: Mapping[str, KeyData]) -> dict[str, Any]:
    return {k: ("failed" if v.failed else len(v.resources)) for k, v in data.items()}
