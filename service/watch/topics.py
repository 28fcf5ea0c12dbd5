"""Topic-based Subscriptions (HL7 Subscriptions R5 Backport IG, on R4 servers) and signed
notifications (issue 20).

- ``discover``: the topics a server offers: ``SubscriptionTopic`` resources (R4B/R5 servers)
  and topics stored as R4 ``Basic`` resources with the R5 cross-version
  ``extension-SubscriptionTopic.*`` extensions (sekmet-fhir, fhir-candle). A topic is used
  when one of its resource triggers is a type the rules read.
- ``subscribe``: one backport Subscription per such topic (``criteria``: the topic's canonical
  URL; ``backport-filter-criteria`` from our criteria when the topic lets us filter by their
  parameters, e.g. the Observation codes; ``backport-payload-content`` ``full-resource`` or
  ``id-only``; ``backport-heartbeat-period`` WATCH_CHECK_S), tagged
  ``urn:baclofen-check:watch|topic-subscription``; idempotent like the classic ones, which it
  leaves alone. The server's handshake is answered by the receiver (a ``200``).
- ``focus_refs``: the focus references of a notification's events (R4 backport
  ``Parameters`` or an R4B ``SubscriptionStatus``). An ``id-only`` notification carries no
  resource, so the receiver keeps each focus in the watch state (``focus:<Type/id>``) and the
  worker reads it from the server (``read_focus``) and queues its patient; the receiver
  itself never calls the server.
- ``signature_ok``: ``X-Hub-Signature: <method>=<hex HMAC of the body>`` with
  WATCH_NOTIFY_HMAC_SECRET (the WebSub form, as athenaOne's subscription platform signs); a
  valid signature stands in for the bearer token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, quote

from sqlalchemy import delete, select

from ..config import Settings
from ..fhir_input.fetch import FhirClient
from ..fhirjson import JSON, as_dict, as_str
from ..fhirref import parse_reference, versioned
from ..knowledge import Knowledge
from ..outbound.deadline import Deadline, FetchFailure
from .queue import Trigger, WatchStore, watch_state

log = logging.getLogger("baclofen_check.watch")
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
PROFILE = f"{BACKPORT}/backport-subscription"
EXT_FILTER = f"{BACKPORT}/backport-filter-criteria"
EXT_CONTENT = f"{BACKPORT}/backport-payload-content"
EXT_HEARTBEAT = f"{BACKPORT}/backport-heartbeat-period"
ST = "http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic"
TAG_CODE = "topic-subscription"
CONTENTS = ("full-resource", "id-only")
FOCUS = "focus:"
# choice: the digests a signature may use (WebSub lists sha1 too; HMAC-SHA1 is still a sound
# MAC, and some platforms send only that)
DIGESTS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha384": hashlib.sha384,
           "sha512": hashlib.sha512}
# choice: at most this many focus resources read per worker pass (the rest wait a pass)
FOCUS_BATCH = 200


@dataclass
class Topic:
    url: str
    types: set[str] = field(default_factory=set)
    filters: dict[str, set[str]] = field(default_factory=dict)   # type -> filterParameters


def _val(ext: JSON) -> Any:
    return next((v for k, v in ext.items() if k.startswith("value")), None)


def _exts(node: JSON, url: str) -> list[JSON]:
    return [as_dict(e) for e in node.get("extension") or [] if as_dict(e).get("url") == url]


def _type_of(uri: Any) -> str:
    return str(uri or "").rstrip("/").rsplit("/", 1)[-1]


def topic_from_basic(basic: JSON) -> Topic | None:
    urls = [_val(e) for e in _exts(basic, f"{ST}.url")]
    status = [_val(as_dict(e)) for e in basic.get("modifierExtension") or []
              if as_dict(e).get("url") == f"{ST}.status"]
    if not urls or not isinstance(urls[0], str) or (status and status[0] != "active"):
        return None
    topic = Topic(urls[0])
    for trig in _exts(basic, f"{ST}.resourceTrigger"):
        topic.types |= {_type_of(_val(e)) for e in _exts(trig, "resource")}
    for can in _exts(basic, f"{ST}.canFilterBy"):
        rtype = next((_type_of(_val(e)) for e in _exts(can, "resource")), "")
        for e in _exts(can, "filterParameter"):
            topic.filters.setdefault(rtype, set()).add(str(_val(e)))
    return topic


def topic_from_resource(res: JSON) -> Topic | None:
    url = as_str(res.get("url"))
    if not url or res.get("status") not in {None, "active"}:
        return None
    topic = Topic(url)
    for trig in res.get("resourceTrigger") or []:
        topic.types.add(_type_of(as_dict(trig).get("resource")))
    for can in res.get("canFilterBy") or []:
        can = as_dict(can)
        param = as_str(can.get("filterParameter"))
        if param:
            topic.filters.setdefault(_type_of(can.get("resource")), set()).add(param)
    return topic


def discover(client: FhirClient, deadline: Deadline) -> list[Topic]:
    """The topics on the server (either form); a form the server does not know is skipped."""
    topics: dict[str, Topic] = {}
    for query, parse in (("SubscriptionTopic?_count=100", topic_from_resource),
                         ("Basic?code=SubscriptionTopic&_count=100", topic_from_basic)):
        try:
            found = client.search(query, deadline)
        except FetchFailure as failure:
            if failure.status not in {400, 404, 405, 422}:
                raise
            continue   # e.g. an R4 server without the SubscriptionTopic type
        for res in found:
            topic = parse(res)
            if topic is not None:
                topics.setdefault(topic.url, topic)
    return list(topics.values())


def _our_criteria(kb: Knowledge) -> dict[str, list[list[tuple[str, str]]]]:
    from .subscriptions import criteria  # cycle: via receiver

    out: dict[str, list[list[tuple[str, str]]]] = {}
    for crit in criteria(kb):
        rtype, _, qs = crit.partition("?")
        out.setdefault(rtype, []).append(parse_qsl(qs, keep_blank_values=True))
    return out


def wanted(settings: Settings, kb: Knowledge, topics: list[Topic], content: str) -> list[JSON]:
    """One backport Subscription per topic that triggers on a type the rules read."""
    from .subscriptions import TAG_SYSTEM, endpoint  # cycle: via receiver

    if content not in CONTENTS:
        raise ValueError(f"content must be one of {', '.join(CONTENTS)}")
    ours = _our_criteria(kb)
    subs = []
    for topic in sorted(topics, key=lambda t: t.url):
        covered = sorted(topic.types & set(ours))
        if not covered:
            continue
        filters = []
        for rtype in covered:
            allowed = topic.filters.get(rtype, set())
            for params in ours[rtype]:
                if params and all(k in allowed for k, _ in params):
                    filters.append(f"{rtype}?" + "&".join(f"{k}={v}" for k, v in params))
        sub: JSON = {
            "resourceType": "Subscription",
            "meta": {"profile": [PROFILE], "tag": [{"system": TAG_SYSTEM, "code": TAG_CODE}]},
            "status": "requested",
            "reason": "baclofen-check watch: re-check active baclofen therapy when this input "
                      "changes (topic-based)",
            "criteria": topic.url,
            "channel": {"type": "rest-hook", "endpoint": endpoint(settings),
                        "payload": "application/fhir+json",
                        "_payload": {"extension": [{"url": EXT_CONTENT, "valueCode": content}]},
                        "extension": [{"url": EXT_HEARTBEAT, "valueUnsignedInt":
                                       int(settings.watch_check_s)}]},
        }
        if settings.watch_notify_token:
            sub["channel"]["header"] = [f"Authorization: Bearer {settings.watch_notify_token}"]
        if filters:
            sub["_criteria"] = {"extension": [{"url": EXT_FILTER, "valueString": f}
                                              for f in filters]}
        subs.append(sub)
    return subs


def ours(client: FhirClient, deadline: Deadline) -> list[JSON]:
    """The topic-based Subscriptions on the server that carry our tag."""
    from .subscriptions import TAG_SYSTEM  # cycle: via receiver

    tag = {"system": TAG_SYSTEM, "code": TAG_CODE}
    query = "Subscription?_tag=" + quote(f"{TAG_SYSTEM}|{TAG_CODE}", safe="") + "&_count=100"
    return [s for s in client.search(query, deadline)
            if s.get("resourceType") == "Subscription"
            and tag in [{k: as_dict(t).get(k) for k in tag}
                        for t in as_dict(s.get("meta")).get("tag") or []]]


def _same(have: JSON, want: JSON) -> bool:
    def shape(s: JSON) -> Any:
        ch = as_dict(s.get("channel"))
        return (s.get("criteria"), s.get("_criteria"), ch.get("endpoint"), ch.get("payload"),
                ch.get("_payload"), ch.get("header"), ch.get("extension"))
    return bool(shape(have) == shape(want))


def subscribe(client: FhirClient, settings: Settings, kb: Knowledge, ws: WatchStore,
              now: datetime, content: str = "full-resource", remove: bool = False
              ) -> dict[str, list[str]]:
    """Make the server's topic-based Subscriptions of this service what ``wanted`` says (or
    none with ``remove``). Raises FetchFailure when the server refuses."""
    from .subscriptions import CURSOR, _delete, criteria  # cycle: via receiver

    deadline = Deadline(max(settings.outbound_timeout_s, 10.0))
    done: dict[str, list[str]] = {"created": [], "updated": [], "kept": [], "deleted": []}
    want = [] if remove else wanted(settings, kb, discover(client, deadline), content)
    by_topic: dict[str, JSON] = {}
    for sub in ours(client, deadline):
        crit = str(sub.get("criteria"))
        if crit in by_topic or crit not in {w["criteria"] for w in want}:
            _delete(client, str(sub["id"]), deadline)
            done["deleted"].append(str(sub["id"]))
        else:
            by_topic[crit] = sub
    for sub in want:
        have = by_topic.get(sub["criteria"])
        if have is not None and _same(have, sub) and have.get("status") in {"active",
                                                                            "requested"}:
            done["kept"].append(str(have["id"]))
        elif have is not None:
            client.request("PUT", f"Subscription/{quote(str(have['id']), safe='')}", deadline,
                           body={**sub, "id": have["id"]}, operation="write")
            done["updated"].append(str(have["id"]))
        else:
            made = client.request("POST", "Subscription", deadline, body=sub,
                                  operation="write")
            done["created"].append(str(made.get("id")))
    if want:   # catch-ups start from the time of subscribing, as for the classic ones
        for crit in criteria(kb):
            if ws.get(CURSOR + crit)[0] is None:
                ws.put(CURSOR + crit, now.isoformat(), now)
    return done


# --- notifications --------------------------------------------------------------------------

def _relative(ref: str | None) -> str | None:
    if not ref:
        return None
    target = parse_reference(ref)
    if target is None or not target.type[:1].isupper():
        return None
    return target.relative


def focus_refs(status: JSON) -> list[str]:
    """``Type/id`` of each event's focus in a backport ``Parameters`` or R4B/R5
    ``SubscriptionStatus``."""
    refs: list[str | None] = []
    if status.get("resourceType") == "SubscriptionStatus":
        refs = [as_str(as_dict(as_dict(e).get("focus")).get("reference"))
                for e in status.get("notificationEvent") or []]
    else:
        for param in status.get("parameter") or []:
            param = as_dict(param)
            if param.get("name") not in {"notification-event", "notificationEvent"}:
                continue
            refs += [as_str(as_dict(as_dict(part).get("valueReference")).get("reference"))
                     for part in param.get("part") or []
                     if as_dict(part).get("name") == "focus"]
    return list(dict.fromkeys(r for r in (_relative(x) for x in refs) if r))


def signature_ok(secret: str, header: str, body: bytes) -> bool:
    """``X-Hub-Signature: sha256=<hex>`` (or sha1, sha384, sha512) over the raw body."""
    method, _, given = header.strip().partition("=")
    digest = DIGESTS.get(method.strip().lower())
    if digest is None or not given:
        return False
    expected = hmac.new(secret.encode(), body, digest).hexdigest()
    return hmac.compare_digest(expected.encode(), given.strip().lower().encode())


def keep_focus(ws: WatchStore, ref: str, now: datetime) -> None:
    """The receiver's part: the focus waits for the worker (never a call to the server)."""
    ws.put(FOCUS + ref, "id-only", now)


def has_focus(ws: WatchStore) -> bool:
    s = watch_state.c
    with ws.engine.connect() as conn:
        return conn.execute(select(s.key).where(s.key.like(FOCUS + "%")).limit(1)).first() \
            is not None


def read_focus(ws: WatchStore, client: FhirClient, settings: Settings, now: datetime) -> int:
    """The worker's part: read each waiting focus from the server and queue its patient (a
    focus gone from the server is dropped; one that cannot be read now waits). Returns how
    many were queued."""
    from .receiver import patient_of  # cycle: via receiver

    s = watch_state.c
    with ws.engine.connect() as conn:
        waiting = conn.execute(select(s.key, s.updated).where(s.key.like(FOCUS + "%"))
                               .order_by(s.updated).limit(FOCUS_BATCH)).all()
    queued = 0
    deadline = Deadline(max(settings.outbound_timeout_s * 5, 10.0))
    for key, received in waiting:
        ref = str(key)[len(FOCUS):]
        try:
            res = client.read(ref, deadline)
        except FetchFailure as failure:
            if failure.status not in {404, 410}:
                log.warning("an id-only focus could not be read; tried again later",
                            extra={"event": "watch-focus-unread", "reason": failure.reason})
                continue
            res = None
        if res is not None:
            patient = patient_of(res)
            meta = as_dict(res.get("meta"))
            version = as_str(meta.get("versionId"))
            if patient is not None:
                ws.enqueue(patient, Trigger("notification", versioned(ref, version), received,
                                            as_str(meta.get("lastUpdated"))),
                           now, settings.watch_coalesce_s,
                           (ref, version or as_str(meta.get("lastUpdated")) or "")
                           if version or meta.get("lastUpdated") else None)
                queued += 1
        with ws.store._writer(), ws.engine.begin() as conn:
            conn.execute(delete(watch_state).where(s.key == key, s.updated == received))
    return queued
