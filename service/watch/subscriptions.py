"""Being told, and catching up: the R4 rest-hook Subscriptions on FHIR_SERVER_URL.

- ``criteria(kb)``: one Subscription criteria per kind of input the rules read, derived from
  the CDS Hooks prefetch templates (service/assemble/queries.py): each template without its
  patient, sort, page size and include; the templates of one resource type are merged (the
  code lists of the Observations are joined; a type read without a filter, Condition or
  Procedure, is subscribed to as a whole).
- ``subscribe``: registers them (``payload: application/fhir+json``, the channel endpoint
  ``PUBLIC_BASE_URL/subscriptions/notify`` with ``Authorization: Bearer WATCH_NOTIFY_TOKEN``),
  tagged ``urn:baclofen-check:watch|subscription``; a second run finds its own by the tag and
  leaves them, updates those that differ and deletes those no longer wanted. ``remove``
  deletes them all.
- ``check``: reads their status; any in ``error`` (sekmet-fhir, for one, sets it for good after
  three failed deliveries) is sent back as ``status: requested``.
- ``catch_up``: for each criteria, searches ``_lastUpdated`` from the cursor (the newest
  ``lastUpdated`` a catch-up saw; at first the time of subscribing, on the server's clock) and
  queues the patients of the resource versions no notification brought.

Every call uses the service's own client for FHIR_SERVER_URL (service/outbound: the configured
FHIR_SERVER_AUTH, allow-list, deadline).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import parse_qsl, quote

from ..assemble.queries import PATIENT, prefetch_templates
from ..config import Settings
from ..fhir_input.fetch import FhirClient
from ..fhirjson import JSON, as_dict, as_str
from ..fhirref import versioned
from ..knowledge import Knowledge
from ..outbound.deadline import Deadline, FetchFailure
from . import metrics
from .queue import Trigger, WatchStore
from .receiver import CATCH_UP_REQUESTED, patient_of

log = logging.getLogger("baclofen_check.watch")
TAG_SYSTEM = "urn:baclofen-check:watch"
TAG_CODE = "subscription"
PAYLOAD = "application/fhir+json"
NOTIFY_PATH = "/subscriptions/notify"
CURSOR = "cursor:"
# choice: a catch-up page holds up to 1000 resources (sekmet's maximum); every page is read
CATCH_UP_PAGE = 1000
# choice: each catch-up looks back this far before its cursor (the versions it saw then are
# remembered and not queued again), for a server whose writes commit in another order than
# their lastUpdated
CATCH_UP_OVERLAP_S = 10.0
# the prefetch parameters that are not about which resources are inputs
_NOT_CRITERIA = frozenset({"patient", "subject", "_sort", "_count", "_include"})


def criteria(kb: Knowledge) -> list[str]:
    """The Subscription criteria, one per resource type the rules read."""
    by_type: dict[str, list[list[tuple[str, str]]]] = {}
    for query in prefetch_templates(kb).values():
        path, _, qs = query.partition("?")
        rtype = path.split("/")[0]
        params = [(k, v) for k, v in parse_qsl(qs, keep_blank_values=True)
                  if k not in _NOT_CRITERIA and PATIENT not in v]
        by_type.setdefault(rtype, []).append(params)
    out = []
    for rtype, variants in by_type.items():
        if any(not params for params in variants):
            out.append(rtype)  # one template reads every resource of the type
        elif all(len(p) == 1 and p[0][0] == "code" for p in variants):
            codes: list[str] = []
            for p in variants:
                codes += [c for c in p[0][1].split(",") if c not in codes]
            out.append(f"{rtype}?code={','.join(codes)}")
        else:
            for p in variants:
                text = f"{rtype}?" + "&".join(f"{k}={v}" for k, v in p)
                if text not in out:
                    out.append(text)
    return out


def endpoint(settings: Settings) -> str:
    return settings.public_base_url + NOTIFY_PATH


def wanted(settings: Settings, kb: Knowledge) -> list[JSON]:
    """The Subscriptions this service wants on the server."""
    if not settings.watch_notify_token:
        raise ValueError("WATCH_NOTIFY_TOKEN is not set: the Subscriptions would have no "
                         "token to send")
    return [{
        "resourceType": "Subscription",
        "meta": {"tag": [{"system": TAG_SYSTEM, "code": TAG_CODE}]},
        "status": "requested",
        "reason": "baclofen-check watch: re-check active baclofen therapy when this input "
                  "changes",
        "criteria": crit,
        "channel": {"type": "rest-hook", "endpoint": endpoint(settings), "payload": PAYLOAD,
                    "header": [f"Authorization: Bearer {settings.watch_notify_token}"]},
    } for crit in criteria(kb)]


def ours(client: FhirClient, deadline: Deadline) -> list[JSON]:
    """The Subscriptions on the server that carry our tag."""
    found = client.search(f"Subscription?_tag={quote(TAG_SYSTEM + '|' + TAG_CODE, safe='')}"
                          "&_count=100", deadline)
    return [s for s in found if s.get("resourceType") == "Subscription" and any(
        as_dict(t).get("system") == TAG_SYSTEM and as_dict(t).get("code") == TAG_CODE
        for t in as_dict(s.get("meta")).get("tag") or [])]


def _same(have: JSON, want: JSON) -> bool:
    h, w = as_dict(have.get("channel")), as_dict(want.get("channel"))
    return (have.get("criteria") == want.get("criteria") and h.get("type") == w.get("type")
            and h.get("endpoint") == w.get("endpoint") and h.get("payload") == w.get("payload")
            and list(h.get("header") or []) == list(w.get("header") or []))


@dataclass
class SubscribeResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


def _delete(client: FhirClient, sid: str, deadline: Deadline) -> None:
    try:
        client.request("DELETE", f"Subscription/{quote(sid, safe='')}", deadline,
                       operation="write")
    except FetchFailure as failure:
        # a 2xx without a FHIR body (204) is a delete done; a Subscription already gone too
        if failure.reason != "invalid-json" and failure.status not in {404, 410}:
            raise


def subscribe(client: FhirClient, settings: Settings, kb: Knowledge, ws: WatchStore,
              now: datetime, remove: bool = False) -> SubscribeResult:
    """Make the server's tagged Subscriptions what ``wanted`` says (or none with
    ``remove``). Raises FetchFailure when the server refuses."""
    deadline = Deadline(max(settings.outbound_timeout_s, 10.0))
    result = SubscribeResult()
    have = ours(client, deadline)
    want = [] if remove else wanted(settings, kb)
    by_criteria: dict[str, JSON] = {}
    for sub in have:
        crit = str(sub.get("criteria"))
        if crit in by_criteria or crit not in {w["criteria"] for w in want}:
            _delete(client, str(sub["id"]), deadline)   # a duplicate, or no longer wanted
            result.deleted.append(str(sub["id"]))
            continue
        by_criteria[crit] = sub
    for sub in want:
        existing = by_criteria.get(sub["criteria"])
        if existing is not None and _same(existing, sub) and existing.get("status") in {
                "active", "requested"}:
            result.kept.append(str(existing["id"]))
            stamp = as_str(as_dict(existing.get("meta")).get("lastUpdated"))
        elif existing is not None:
            updated = client.request("PUT", f"Subscription/{quote(str(existing['id']), safe='')}",
                                     deadline, body={**sub, "id": existing["id"]},
                                     operation="write")
            result.updated.append(str(existing["id"]))
            stamp = as_str(as_dict(updated.get("meta")).get("lastUpdated"))
        else:
            created = client.request("POST", "Subscription", deadline, body=sub,
                                     operation="write")
            result.created.append(str(created.get("id")))
            stamp = as_str(as_dict(created.get("meta")).get("lastUpdated"))
        key = CURSOR + sub["criteria"]
        if ws.get(key)[0] is None:   # catch-ups start from the time of subscribing
            ws.put(key, stamp or now.isoformat(), now)
    return result


def check(client: FhirClient, settings: Settings, kb: Knowledge, deadline: Deadline
          ) -> list[str]:
    """Send back as ``requested`` every tagged Subscription in ``error``; returns their ids."""
    again = []
    for sub in ours(client, deadline):
        if sub.get("status") != "error":
            continue
        body = {k: v for k, v in sub.items() if k not in {"meta", "error"}}
        body["status"] = "requested"
        body["meta"] = {"tag": [{"system": TAG_SYSTEM, "code": TAG_CODE}]}
        client.request("PUT", f"Subscription/{quote(str(sub['id']), safe='')}", deadline,
                       body=body, operation="write")
        log.warning("a Subscription in error was requested again", extra={
            "event": "watch-subscription-rerequested", "subscription": str(sub["id"])})
        metrics.SUBSCRIPTIONS_REREQUESTED.inc()
        again.append(str(sub["id"]))
    return again


def _parse_instant(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


@dataclass
class CatchUpResult:
    found: int = 0          # resources changed since the cursors
    queued: list[str] = field(default_factory=list)   # patients queued (unseen changes)


def catch_up(client: FhirClient, settings: Settings, kb: Knowledge, ws: WatchStore,
             now: datetime, since: datetime | None = None,
             deadline: Deadline | None = None) -> CatchUpResult:
    """Queue the patients of the changes no notification brought, for every criteria, from
    its cursor (or from ``since`` for every criteria, by hand). A cursor moves only once its
    search was read to the end."""
    result = CatchUpResult()
    deadline = deadline or Deadline(max(settings.outbound_timeout_s * 5, 30.0))
    for crit in criteria(kb):
        key = CURSOR + crit
        cursor = since.isoformat() if since is not None else ws.get(key)[0]
        if cursor is None:   # never subscribed from this database: look back two periods
            cursor = (now - timedelta(seconds=2 * settings.watch_check_s)).isoformat()
        sep = "&" if "?" in crit else "?"
        start = _parse_instant(cursor)
        look_from = cursor if start is None or since is not None else \
            (start - timedelta(seconds=CATCH_UP_OVERLAP_S)).isoformat()
        query = (f"{crit}{sep}_lastUpdated={quote('ge' + look_from, safe='')}"
                 f"&_sort=_lastUpdated&_count={CATCH_UP_PAGE}")
        resources = client.search(query, deadline)
        result.found += len(resources)
        newest = _parse_instant(cursor)
        newest_text = cursor
        versions: list[tuple[str, str]] = []
        patients: dict[tuple[str, str], tuple[str | None, JSON]] = {}
        for res in resources:
            meta = as_dict(res.get("meta"))
            stamp = as_str(meta.get("versionId")) or as_str(meta.get("lastUpdated"))
            ref = f"{res.get('resourceType')}/{res.get('id')}"
            if stamp:
                versions.append((ref, stamp))
                patients[(ref, stamp)] = (patient_of(res), res)
            updated = _parse_instant(as_str(meta.get("lastUpdated")))
            if updated is not None and (newest is None or updated > newest):
                newest, newest_text = updated, str(meta.get("lastUpdated"))
        for pair in sorted(ws.unseen(versions, now)):
            patient, res = patients[pair]
            if patient is None:
                continue
            meta = as_dict(res.get("meta"))
            trigger = Trigger("catch-up", versioned(pair[0], pair[1] if meta.get("versionId")
                                                    else None), now,
                              as_str(meta.get("lastUpdated")))
            ws.enqueue(patient, trigger, now, settings.watch_coalesce_s)
            metrics.CATCH_UP_QUEUED.inc()
            if patient not in result.queued:
                result.queued.append(patient)
        if since is None:
            ws.put(key, newest_text, now)
    return result


def catch_up_due(ws: WatchStore, now: datetime) -> bool:
    """A ping or an id-only notification asked for a catch-up since the last one."""
    _, asked = ws.get(CATCH_UP_REQUESTED)
    _, done = ws.get("catch-up-done")
    return asked is not None and (done is None or asked > done)
