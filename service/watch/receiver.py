"""The notification receiver: ``PUT /subscriptions/notify/{type}/{id}`` (the R4 rest-hook
form where the server PUTs the changed resource) and ``POST /subscriptions/notify`` (the
resource itself, a notification Bundle, or an empty ping).

It checks the notify token (constant-time; anything else is a ``401``), takes the patient
reference out of each resource, queues a re-check of that patient (service/watch/queue.py)
and answers at once. It never calls the FHIR server: a notification that names no patient (a
ping, an id-only topic notification) asks the worker for a catch-up instead. A notification
the store cannot take is answered ``503`` so that the server sends it again (and, once it
gives up, the catch-up finds what it carried).
"""

from __future__ import annotations

import hmac
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, current_app, json, request
from sqlalchemy.exc import SQLAlchemyError

from ..clock import app_clock
from ..config import Settings
from ..errors import Problem, ServiceError, bad_request, unauthorized
from ..fhirjson import JSON, as_dict, as_str
from ..fhirref import parse_reference, versioned
from ..jsonbody import JSON_TYPES, check_size, media_type, parse_json_text
from . import metrics
from .queue import Trigger, WatchStore
from .topics import focus_refs, keep_focus, signature_ok

bp = Blueprint("watch", __name__)
log = logging.getLogger("baclofen_check.watch")
FHIR_JSON = "application/fhir+json"
CATCH_UP_REQUESTED = "catch-up-requested"
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
# the resources of a notification Bundle that are about the notification, not the change
_ENVELOPE = frozenset({"Parameters", "SubscriptionStatus", "Bundle", "OperationOutcome",
                       "Subscription"})
# where a resource names its patient (Patient itself aside)
_PATIENT_ELEMENTS = ("subject", "patient")


@dataclass(frozen=True)
class Event:
    patient_ref: str | None        # Patient/<id>, or None: a catch-up is needed
    trigger: Trigger
    seen: tuple[str, str] | None   # (Type/id, version) when the resource had one


def watch_store() -> WatchStore:
    ws: WatchStore = current_app.extensions["watch"]
    return ws


def _settings() -> Settings:
    s: Settings = current_app.config["SETTINGS"]
    return s


def _check_token(settings: Settings) -> None:
    signature = request.headers.get("X-Hub-Signature")
    if settings.watch_notify_hmac_secret and signature:   # signed instead (issue 20)
        check_size(request, settings.max_request_bytes)
        if signature_ok(settings.watch_notify_hmac_secret, signature,
                        request.get_data(cache=True)):
            return
        metrics.NOTIFICATIONS.labels("refused").inc()
        raise unauthorized("the notification's signature (X-Hub-Signature) is not accepted")
    expected = settings.watch_notify_token
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    ok = expected is not None and scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), expected.encode())
    if not ok:
        metrics.NOTIFICATIONS.labels("refused").inc()
        raise unauthorized("the notification token is not accepted")


def patient_of(resource: JSON) -> str | None:
    """``Patient/<id>`` of a resource: the Patient itself, or its subject/patient reference
    when that is a Patient (relative or absolute). None when it names none."""
    if resource.get("resourceType") == "Patient":
        rid = as_str(resource.get("id"))
        return f"Patient/{rid}" if rid and _ID.match(rid) else None
    for element in _PATIENT_ELEMENTS:
        ref = as_str(as_dict(resource.get(element)).get("reference"))
        if not ref:
            continue
        target = parse_reference(ref)
        if target is not None and target.type == "Patient" and _ID.match(target.id):
            return target.relative
    return None


def _reference(resource: JSON) -> tuple[str | None, tuple[str, str] | None, str | None]:
    """(Type/id[/_history/v], (Type/id, version) or None, meta.lastUpdated)."""
    rtype, rid = as_str(resource.get("resourceType")), as_str(resource.get("id"))
    meta = as_dict(resource.get("meta"))
    version = as_str(meta.get("versionId"))
    updated = as_str(meta.get("lastUpdated"))
    if not rtype or not rid:
        return None, None, updated
    ref = f"{rtype}/{rid}"
    stamp = version or updated
    return (versioned(ref, version),
            (ref, stamp) if stamp else None, updated)


def _resource_events(resources: list[JSON], kind: str, now: datetime) -> list[Event]:
    events = []
    for res in resources:
        ref, seen, updated = _reference(res)
        events.append(Event(patient_of(res), Trigger(kind, ref, now, updated), seen))
    return events


def events_of(body: Any, now: datetime) -> tuple[str, list[Event]]:
    """The notification's kind (for the metrics) and its events. A resource that names no
    patient (a Medication) gives no event; a notification without resources gives one event
    without patient (a catch-up)."""
    if body is None:
        return "ping", [Event(None, Trigger("ping", None, now), None)]
    if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
        raise bad_request("a notification is a FHIR resource, a Bundle or an empty body")
    if body["resourceType"] != "Bundle":
        events = _resource_events([body], "notification", now)
        return "resource", [e for e in events if e.patient_ref is not None]
    entries = [as_dict(e) for e in body.get("entry") or [] if isinstance(e, dict)]
    resources = [as_dict(e.get("resource")) for e in entries]
    status = next((r for r in resources if r.get("resourceType") in
                   {"Parameters", "SubscriptionStatus"}), None)
    kind = _topic_kind(status) if status is not None else None
    if kind in {"handshake", "heartbeat", "query-status", "query-event"}:
        return kind, []
    changed = [r for r in resources if isinstance(r.get("resourceType"), str)
               and r["resourceType"] not in _ENVELOPE]
    events = [e for e in _resource_events(changed, "notification", now)
              if e.patient_ref is not None]
    if not changed:  # id-only (or empty) notification: the patients are not named
        focus = focus_refs(status) if status is not None else []
        if focus:    # the worker reads each focus from the server (service/watch/topics.py)
            return "bundle-ids", [Event(None, Trigger("focus", ref, now), None)
                                  for ref in focus]
        return "bundle-ids", [Event(None, Trigger("ping", None, now), None)]
    return "bundle", events


def _topic_kind(status: JSON) -> str | None:
    """``type`` of an R4 backport SubscriptionStatus (a Parameters) or an R4B/R5 one."""
    if status.get("resourceType") == "SubscriptionStatus":
        return as_str(status.get("type"))
    for param in status.get("parameter") or []:
        if isinstance(param, dict) and param.get("name") == "type":
            return as_str(param.get("valueCode"))
    return None


def _read_body(settings: Settings) -> Any:
    check_size(request, settings.max_request_bytes)
    data = request.get_data(cache=False)
    if len(data) > settings.max_request_bytes:
        raise ServiceError(413, [Problem(
            f"the notification is larger than {settings.max_request_bytes} bytes",
            "too-costly")])
    if not data.strip():
        return None
    if media_type(request) not in JSON_TYPES:
        raise ServiceError(415, [Problem(
            f"unsupported media type {media_type(request) or '(none)'}: send "
            f"{', '.join(JSON_TYPES)}", "not-supported")])
    return parse_json_text(data)


def _receive(path_type: str | None = None, path_id: str | None = None) -> Response:
    settings = _settings()
    if settings.watch_notify_token is None and settings.watch_notify_hmac_secret is None:
        raise ServiceError(404, [Problem("the watch receiver is off (WATCH_NOTIFY_TOKEN is "
                                         "not set)", "not-found")])
    _check_token(settings)
    now = app_clock(current_app)()
    body = _read_body(settings)
    if path_type is not None:
        if not _TYPE.match(path_type) or not path_id or not _ID.match(path_id):
            raise bad_request("the notification URL must be /subscriptions/notify/{type}/{id}")
        if body is not None and (not isinstance(body, dict) or (
                body.get("resourceType"), body.get("id")) != (path_type, path_id)):
            raise bad_request(f"the body is not the {path_type}/{path_id} of the URL")
    kind, events = events_of(body, now)
    ws = watch_store()
    queued = 0
    try:
        for event in events:
            if event.patient_ref is None and event.trigger.kind == "focus":
                keep_focus(ws, str(event.trigger.resource), now)
                continue
            if event.patient_ref is None:
                ws.put(CATCH_UP_REQUESTED, event.trigger.kind, now)
                continue
            ws.enqueue(event.patient_ref, event.trigger, now, settings.watch_coalesce_s,
                       event.seen)
            queued += 1
    except SQLAlchemyError as exc:
        metrics.NOTIFICATIONS.labels("unstored").inc()
        log.warning("a notification could not be queued", extra={
            "event": "watch-notification-unstored", "error_type": type(exc).__name__})
        raise ServiceError(503, [Problem("the notification could not be queued now; send it "
                                         "again", "transient")], {"Retry-After": "5"}) from exc
    metrics.NOTIFICATIONS.labels(kind).inc()
    return Response(json.dumps({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "information", "code": "informational",
                   "diagnostics": f"notification received: {queued} re-check(s) queued"
                                  + ("; a catch-up requested" if any(
                                      e.patient_ref is None and e.trigger.kind != "focus"
                                      for e in events) else "")}]}),
        mimetype=FHIR_JSON)


@bp.post("/subscriptions/notify")
def notify() -> Response:
    return _receive()


@bp.route("/subscriptions/notify/<path_type>/<path_id>", methods=["PUT", "POST"])
def notify_resource(path_type: str, path_id: str) -> Response:
    return _receive(path_type, path_id)
