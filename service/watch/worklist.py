"""The pharmacist worklist (issue 20): the open findings that re-checks raised, resolved with a
recorded intervention, mirrored as FHIR Tasks in the EHR's own worklists.

What is on the list is derived, on every read, from what the worker recorded
(service/watch/queue.py: ``watch_findings`` per re-check and finding, ``watch_rechecks`` per
re-check) and from the resolutions recorded here; nothing is copied, so the list can never
disagree with the results:

- a finding is **open** from the re-check that raised it (its latest ``new`` row) while later
  re-checks keep raising it (``unchanged``);
- it is **cancelled** (off the list, history kept) when a later re-check no longer raises it
  (``cancelled``), or when the latest completed re-check of its patient did not check its order
  any more (the order is no longer active: the re-check reads active orders only);
- it is **resolved** once a pharmacist recorded an outcome for it, and stays off the list
  until a re-check raises it again *for a different reason*: a finding's DetectedIssue
  ``detail`` (the sentence with the numbers: dose, limit, kidney function and its date)
  differs from the one that was resolved. It then comes back as a new episode that names the
  earlier resolution.

Tables (in the store's database, next to the watch's; created with them):

- ``worklist_resolutions``: the audit of each resolution: finding, episode (the
  ``watch_findings`` row that opened it; unique per finding and episode, so two pharmacists
  resolving at once get one ``200`` and one ``409``), who, when, outcome, comment, the detail
  resolved, and whether the DetectedIssue's ``mitigation`` is on the server yet;
- ``worklist_tasks``: one FHIR Task per finding episode (with WATCH_TASK_OWNER): the status the
  server should have and the one last written (``sync`` brings them together: idempotent
  ``PUT Task/bc-task-<hash>``);
- ``worklist_orders``: the order as the pharmacist reads it (product, dose, daily mg), read
  from the server once per finding.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Integer,
    String,
    Table,
    UniqueConstraint,
    and_,
    case,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from ..facts.orders import read_order
from ..fhir_input.fetch import FhirClient
from ..fhirjson import JSON as FhirJSON
from ..fhirjson import as_dict, as_str
from ..fhirref import split_version, unversioned
from ..findings import SEVERITY_RANK
from ..outbound.deadline import Deadline, FetchFailure
from ..output.fhir import FINDING_SYSTEM, iso
from ..store import _ID, UTCDateTime
from ..wording import fmt, times_per_day
from .queue import WatchStore, metadata, watch_findings, watch_rechecks

log = logging.getLogger("baclofen_check.watch")

INTERVENTION_SYSTEM = "urn:baclofen-check:intervention"
# the outcomes a pharmacist records (interfaces.md section 6), with what the server shows
OUTCOMES = {
    "dose-changed": "Dose changed",
    "stopped": "Baclofen stopped",
    "monitoring": "Monitoring arranged",
    "not-relevant": "Not clinically relevant",
}
# choice: the list shows high and moderate findings; low ones only when asked for
LISTED = ("high", "moderate")
# choice: Task.priority from the severity (routine < urgent < asap < stat): a high finding is
# "asap", a moderate one "urgent"; low findings get no Task
TASK_PRIORITY = {"high": "asap", "moderate": "urgent"}
MAX_COMMENT = 2000
MAX_PER_PAGE = 200
TASK_BATCH = 50

worklist_resolutions = Table(
    "worklist_resolutions", metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("finding_id", String(200), nullable=False, index=True),
    Column("episode", Integer, nullable=False),
    Column("time", UTCDateTime, nullable=False),
    Column("who", String(200), nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("comment", String(MAX_COMMENT)),
    Column("detail", String(4000)),
    Column("patient_ref", String(500), nullable=False),
    Column("order_ref", String(500), nullable=False),
    Column("rule_id", String(200), nullable=False),
    Column("severity", String(20), nullable=False),
    Column("detected_issue", String(300)),
    Column("server", String(16), nullable=False),     # pending | written
    Column("server_error", String(500)),
    UniqueConstraint("finding_id", "episode", name="uq_worklist_resolution"),
)

worklist_tasks = Table(
    "worklist_tasks", metadata,
    Column("finding_id", String(200), primary_key=True),
    Column("episode", Integer, primary_key=True),
    Column("task_id", String(64), nullable=False),
    Column("wanted", String(16), nullable=False),     # requested | completed | cancelled
    Column("written", String(16)),                    # the status last written to the server
    Column("outcome", String(32)),
    Column("created", UTCDateTime, nullable=False),
    Column("updated", UTCDateTime, nullable=False),
    Column("error", String(500)),
)

worklist_orders = Table(
    "worklist_orders", metadata,
    Column("finding_id", String(200), primary_key=True),
    Column("medication", JSON, nullable=False),
    Column("read", UTCDateTime, nullable=False),
)


def create(ws: WatchStore) -> WatchStore:
    """Create the watch and worklist tables that do not exist (the worklist's tables are on
    the watch's metadata: ``WatchStore.create`` makes them once this module is imported)."""
    return ws.create()


# --- the state of each finding ----------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    """One ``watch_findings`` row, as the worklist reads it."""

    id: int
    recheck_id: str
    time: datetime
    patient_ref: str
    order_ref: str
    finding_id: str
    rule_id: str
    severity: str
    change: str
    server_id: str | None
    detail: str | None
    title: str | None


@dataclass
class State:
    finding_id: str
    status: str                 # open | resolved | cancelled
    opening: Row                # the row that opened the current episode
    last: Row                   # the newest row
    why_closed: str | None = None
    resolution: dict[str, Any] | None = None    # the latest resolution
    reopened_after: dict[str, Any] | None = None  # the resolution this episode follows
    trigger: dict[str, Any] | None = None
    events: int = 0
    task: str | None = None
    medication: dict[str, Any] | None = None

    @property
    def episode(self) -> int:
        return self.opening.id


def _row(r: Any) -> Row:
    issue = as_dict(getattr(r, "detected_issue", None))
    return Row(int(r.id), str(r.recheck_id), r.time, str(r.patient_ref), str(r.order_ref),
               str(r.finding_id), str(r.rule_id), str(r.severity), str(r.change),
               r.server_id, as_str(issue.get("detail")),
               as_str(as_dict(issue.get("code")).get("text")))


def _chunks(items: Sequence[Any], n: int = 400) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), n):
        yield items[start:start + n]


def _open_candidates(conn: Connection) -> list[str]:
    """Findings whose newest row is not ``cancelled``."""
    f = watch_findings.c
    newest = select(func.max(f.id).label("id")).group_by(f.finding_id).subquery()
    rows = conn.execute(select(f.finding_id).join(newest, newest.c.id == f.id)
                        .where(f.change != "cancelled")).all()
    return [str(r.finding_id) for r in rows]


def _trigger(triggers: Any) -> dict[str, Any] | None:
    """The first event of a re-check: which resource (Type/id, and its version), and when it
    changed on the server (its lastUpdated), else when it was received."""
    first = as_dict(triggers[0]) if isinstance(triggers, list) and triggers else {}
    if not first:
        return None
    ref = as_str(first.get("resource"))
    resource, version = split_version(ref or "")
    return {"kind": first.get("kind"), "resource": resource or None,
            "version": version or None, "at": first.get("lastUpdated") or first.get("received"),
            "received": first.get("received")}


def states(ws: WatchStore, finding_ids: Iterable[str] | None = None,
           details: bool = True) -> dict[str, State]:
    """The state of every finding that may be open (or of the findings named). Without
    ``details`` the rows carry no detail or title except where a resolution needs them
    (``with_details`` adds them to the states shown)."""
    f, r = watch_findings.c, watch_rechecks.c
    columns = select(watch_findings) if details else select(
        *[c for c in watch_findings.c if c.name != "detected_issue"])
    res, tasks, orders = worklist_resolutions.c, worklist_tasks.c, worklist_orders.c
    with ws.engine.connect() as conn:
        ids = sorted(set(finding_ids) if finding_ids is not None else _open_candidates(conn))
        rows: dict[str, list[Row]] = {}
        resolutions: dict[str, dict[str, Any]] = {}
        task_of: dict[tuple[str, int], str] = {}
        medication: dict[str, Any] = {}
        for chunk in _chunks(ids):
            for row in conn.execute(select(worklist_resolutions).where(
                    res.finding_id.in_(chunk)).order_by(res.time, res.id)).all():
                resolutions[str(row.finding_id)] = dict(row._mapping)
            # the rows that decide: the first, the latest "new", the newest, and (for a
            # resolved finding) every row after its resolution
            ends = conn.execute(select(
                f.finding_id, func.min(f.id), func.max(f.id),
                func.max(case((f.change == "new", f.id), else_=None)))
                .where(f.finding_id.in_(chunk)).group_by(f.finding_id)).all()
            wanted = sorted({int(i) for e in ends for i in e[1:] if i is not None})
            # (the rows after a resolution first: they need their detail)
            picked = [select(watch_findings).where(f.finding_id == fid, f.time > at)
                      for fid, at in ((k, v["time"]) for k, v in resolutions.items()
                                      if k in chunk)]
            picked += [columns.where(f.id.in_(part)) for part in _chunks(wanted)]
            seen: set[int] = set()
            for query in picked:
                for row in conn.execute(query).all():
                    if int(row.id) not in seen:
                        seen.add(int(row.id))
                        rows.setdefault(str(row.finding_id), []).append(_row(row))
            for row in conn.execute(select(tasks.finding_id, tasks.episode, tasks.task_id)
                                    .where(tasks.finding_id.in_(chunk))).all():
                task_of[(str(row.finding_id), int(row.episode))] = str(row.task_id)
            for row in conn.execute(select(orders.finding_id, orders.medication)
                                    .where(orders.finding_id.in_(chunk))).all():
                medication[str(row.finding_id)] = row.medication
        for found in rows.values():
            found.sort(key=lambda row: row.id)
        patients = sorted({rs[-1].patient_ref for rs in rows.values()})
        latest: dict[str, Any] = {}
        for chunk in _chunks(patients):
            newest = select(r.patient_ref, func.max(r.time).label("time")).where(
                r.patient_ref.in_(chunk), r.outcome == "done").group_by(r.patient_ref) \
                .subquery()
            for row in conn.execute(select(r.id, r.patient_ref, r.time, r.order_refs, r.error)
                                    .join(newest, and_(newest.c.patient_ref == r.patient_ref,
                                                       newest.c.time == r.time))
                                    .where(r.outcome == "done").order_by(r.time, r.id)).all():
                latest[str(row.patient_ref)] = row
        out = {fid: _state(rs, latest.get(rs[-1].patient_ref), resolutions.get(fid))
               for fid, rs in rows.items()}
        openings = sorted({s.opening.recheck_id for s in out.values()})
        triggers: dict[str, tuple[Any, int]] = {}
        for chunk in _chunks(openings):
            for row in conn.execute(select(r.id, r.triggers, r.events)
                                    .where(r.id.in_(chunk))).all():
                triggers[str(row.id)] = (row.triggers, int(row.events))
    for state in out.values():
        trig, events = triggers.get(state.opening.recheck_id, (None, 0))
        state.trigger, state.events = _trigger(trig), events
        state.task = task_of.get((state.finding_id, state.episode))
        state.medication = medication.get(state.finding_id)
    return out


def _state(rows: list[Row], latest: Any, resolution: dict[str, Any] | None) -> State:
    last = rows[-1]
    start = max((i for i, row in enumerate(rows) if row.change == "new"), default=0)
    opening = rows[start]
    state = State(last.finding_id, "open", opening, last, resolution=resolution)
    if last.change == "cancelled":
        state.status, state.why_closed = "cancelled", "a later re-check no longer raises it"
        return state
    if latest is not None and str(latest.id) != last.recheck_id and latest.time >= last.time \
            and last.order_ref not in (latest.order_refs or []) \
            and last.order_ref not in str(latest.error or ""):
        state.status = "cancelled"
        state.why_closed = "the order was not among the patient's active orders at the " \
                           "latest re-check"
        return state
    if resolution is not None:
        considered = [row for row in rows[start:] if row.time > resolution["time"]]
        different = next((row for row in considered if row.detail != resolution["detail"]),
                         None)
        if different is None:
            # (also when it was resolved in an earlier episode with these very numbers)
            state.status = "resolved"
            return state
        state.opening, state.reopened_after = different, resolution
    return state


# --- the list ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Query:
    severities: frozenset[str] = frozenset(LISTED)
    rules: frozenset[str] = frozenset()      # rule ids or families ("renal")
    older_than_h: float | None = None
    newer_than_h: float | None = None
    page: int = 1
    per_page: int = 50


def _matches(state: State, q: Query, now: datetime) -> bool:
    if state.last.severity not in q.severities:
        return False
    rule = state.last.rule_id
    if q.rules and rule not in q.rules and rule.split(".")[0] not in q.rules:
        return False
    age_h = (now - state.opening.time).total_seconds() / 3600
    if q.older_than_h is not None and age_h < q.older_than_h:
        return False
    return not (q.newer_than_h is not None and age_h > q.newer_than_h)


def ranked(found: Iterable[State]) -> list[State]:
    """Highest severity first, then the oldest."""
    return sorted(found, key=lambda s: (-SEVERITY_RANK.get(s.last.severity, 0),
                                        s.opening.time, s.finding_id))


def entry(state: State) -> dict[str, Any]:
    """One worklist entry (interfaces.md section 6), with what the page shows besides."""
    last, opening = state.last, state.opening
    server_id = last.server_id or opening.server_id
    resolution = state.resolution if state.status == "resolved" else state.reopened_after
    return {
        "finding": state.finding_id,
        "status": state.status,
        "patient": last.patient_ref,
        "order": last.order_ref,
        "medication": state.medication,
        "rule": last.rule_id,
        "severity": last.severity,
        "title": last.title,
        "summary": last.detail or opening.detail,
        "detectedIssue": f"DetectedIssue/{server_id}" if server_id else None,
        "task": f"Task/{state.task}" if state.task else None,
        "trigger": state.trigger,
        "events": state.events,
        "since": opening.time.isoformat(),
        "lastChecked": last.time.isoformat(),
        "resolution": _resolution_json(resolution) if resolution else None,
        "reopened": state.reopened_after is not None,
        "closed": state.why_closed,
    }


def _resolution_json(res: dict[str, Any]) -> dict[str, Any]:
    return {"outcome": res["outcome"], "display": OUTCOMES.get(res["outcome"], res["outcome"]),
            "comment": res["comment"], "by": res["who"], "at": res["time"].isoformat(),
            "mitigationOnServer": res["server"] == "written",
            "serverError": res["server_error"]}


def with_details(ws: WatchStore, shown: list[State]) -> list[State]:
    """The detail and title of the rows the entries show (read for these only)."""
    ids = sorted({row.id for s in shown for row in (s.opening, s.last) if row.detail is None})
    found: dict[int, Any] = {}
    f = watch_findings.c
    with ws.engine.connect() as conn:
        for chunk in _chunks(ids):
            found.update((int(r.id), r) for r in conn.execute(
                select(watch_findings).where(f.id.in_(chunk))).all())
    for state in shown:
        if state.opening.id in found:
            state.opening = _row(found[state.opening.id])
        if state.last.id in found:
            state.last = _row(found[state.last.id])
    return shown


def worklist(ws: WatchStore, q: Query, now: datetime) -> dict[str, Any]:
    chosen = ranked(s for s in states(ws, details=False).values()
                    if s.status == "open" and _matches(s, q, now))
    first = (q.page - 1) * q.per_page
    shown = with_details(ws, chosen[first:first + q.per_page])
    return {"entries": [entry(s) for s in shown],
            "total": len(chosen), "page": q.page, "perPage": q.per_page}


# --- resolve --------------------------------------------------------------------------------

class Refused(Exception):
    """A resolve the worklist refuses: ``status`` 404, 400 or 409."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Resolved:
    state: State
    record: dict[str, Any]


def resolve(ws: WatchStore, finding_id: str, outcome: Any, comment: Any, who: str,
            now: datetime) -> Resolved:
    """Record a pharmacist's resolution (the audit row; the server is written by
    ``write_resolution``). Raises Refused."""
    found = states(ws, [finding_id]).get(finding_id)
    if found is None:
        raise Refused(404, f"no finding {finding_id!r} on the worklist")
    if not isinstance(outcome, str) or outcome not in OUTCOMES:
        raise Refused(400, f"outcome must be one of {', '.join(OUTCOMES)}")
    if comment is not None and not isinstance(comment, str):
        raise Refused(400, "comment must be a string")
    comment = (comment or "").strip() or None
    if comment is not None and len(comment) > MAX_COMMENT:
        raise Refused(400, f"comment is longer than {MAX_COMMENT} characters")
    if found.status == "resolved":
        raise Refused(409, "this finding is already resolved")
    if found.status != "open":
        raise Refused(409, f"this finding is no longer open: {found.why_closed}")
    server_id = found.last.server_id or found.opening.server_id
    record = {
        "finding_id": finding_id, "episode": found.episode, "time": now, "who": who[:200],
        "outcome": outcome, "comment": comment, "detail": found.last.detail,
        "patient_ref": found.last.patient_ref, "order_ref": found.last.order_ref,
        "rule_id": found.last.rule_id, "severity": found.last.severity,
        "detected_issue": f"DetectedIssue/{server_id}" if server_id else None,
        "server": "pending", "server_error": None,
    }
    t = worklist_tasks.c
    try:
        with ws.store._writer(), ws.engine.begin() as conn:
            key = conn.execute(insert(worklist_resolutions).values(**record)).inserted_primary_key
            record["id"] = key[0] if key else None
            conn.execute(update(worklist_tasks).where(
                t.finding_id == finding_id, t.episode == found.episode).values(
                wanted="completed", outcome=outcome, updated=now))
    except IntegrityError as exc:
        raise Refused(409, "this finding is already resolved") from exc
    found.status, found.resolution = "resolved", record
    return Resolved(found, record)


def mitigation(record: dict[str, Any]) -> FhirJSON:
    """The DetectedIssue.mitigation for a resolution: the action coded, the date, the author."""
    display = OUTCOMES[record["outcome"]]
    return {"action": {"coding": [{"system": INTERVENTION_SYSTEM, "code": record["outcome"],
                                   "display": display}],
                       "text": f"{display}: {record['comment']}" if record["comment"]
                       else display},
            "date": _iso(record["time"]),
            "author": {"display": f"{record['who']} (baclofen-check worklist)"}}


def _iso(moment: datetime) -> str:
    return iso(moment)


def _has(issue: FhirJSON, mit: FhirJSON) -> bool:
    code = mit["action"]["coding"][0]["code"]
    return any(as_dict(m).get("date") == mit["date"] and any(
        as_dict(c).get("code") == code and as_dict(c).get("system") == INTERVENTION_SYSTEM
        for c in as_dict(as_dict(m).get("action")).get("coding") or [])
        for m in issue.get("mitigation") or [])


def write_resolution(ws: WatchStore, settings: Any, client: FhirClient,
                     record: dict[str, Any], deadline: Deadline) -> None:
    """The mitigation on the DetectedIssue and the Task completed, in ONE transaction on the
    server (the DetectedIssue under ``ifMatch`` its version: a write-back in between is not
    overwritten; one retry on a conflict). Marks the resolution written. Raises FetchFailure
    when the server cannot be written now (``sync`` tries again)."""
    r = worklist_resolutions.c
    mit = mitigation(record)
    for attempt in (1, 2):
        entries: list[FhirJSON] = []
        if record["detected_issue"]:
            issue = client.read(record["detected_issue"], deadline)
            if not _has(issue, mit):
                version = as_str(as_dict(issue.get("meta")).get("versionId"))
                body = {k: v for k, v in issue.items() if k != "meta"}
                body["mitigation"] = [*(issue.get("mitigation") or []), mit]
                request: FhirJSON = {"method": "PUT", "url": record["detected_issue"]}
                if version:
                    request["ifMatch"] = f'W/"{version}"'
                entries.append({"fullUrl": client.url_for(record["detected_issue"]),
                                "resource": body, "request": request})
        entries += _task_entries(ws, settings, [(record["finding_id"], record["episode"])])
        if not entries:
            break
        try:
            client.transaction({"resourceType": "Bundle", "type": "transaction",
                                "entry": entries}, deadline)
            break
        except FetchFailure as failure:
            if attempt == 2 or failure.status not in {409, 412}:
                with ws.store._writer(), ws.engine.begin() as conn:
                    conn.execute(update(worklist_resolutions).where(r.id == record["id"])
                                 .values(server_error=str(failure)[:500]))
                raise
    _tasks_written(ws, [(record["finding_id"], record["episode"])])
    with ws.store._writer(), ws.engine.begin() as conn:
        conn.execute(update(worklist_resolutions).where(r.id == record["id"])
                     .values(server="written", server_error=None))
    record["server"], record["server_error"] = "written", None


# --- Tasks ------------------------------------------------------------------------------------

def task_id(finding_id: str, episode: int) -> str:
    digest = hashlib.sha256(f"{finding_id}\x1f{episode}".encode()).hexdigest()[:40]
    return f"bc-task-{digest}"


def task_resource(settings: Any, row: Any, state: State | None) -> FhirJSON:
    """The Task for one finding episode in the status ``row.wanted``."""
    last = state.last if state is not None else None
    task: FhirJSON = {
        "resourceType": "Task", "id": row.task_id,
        "identifier": [{"system": FINDING_SYSTEM, "value": row.finding_id}],
        "status": row.wanted, "intent": "order",
        "code": {"text": "Review a baclofen finding (baclofen-check worklist)"},
        "authoredOn": _iso(row.created), "lastModified": _iso(row.updated),
    }
    if last is not None:
        priority = TASK_PRIORITY.get(last.severity)
        if priority:
            task["priority"] = priority
        if last.detail:
            task["description"] = last.detail[:1000]
        server_id = last.server_id or (state.opening.server_id if state else None)
        if server_id:
            task["focus"] = {"reference": f"DetectedIssue/{server_id}"}
        task["for"] = {"reference": last.patient_ref}
        task["reasonReference"] = {"reference": last.order_ref}
    if settings.watch_task_owner:
        task["owner"] = {"reference": settings.watch_task_owner}
    if row.wanted == "completed" and row.outcome:
        task["output"] = [{"type": {"text": "outcome"}, "valueCodeableConcept": {
            "coding": [{"system": INTERVENTION_SYSTEM, "code": row.outcome,
                        "display": OUTCOMES.get(row.outcome, row.outcome)}]}}]
    if row.wanted == "cancelled":
        task["statusReason"] = {"text": "the finding no longer applies"}
    return task


def _task_entries(ws: WatchStore, settings: Any, keys: Sequence[tuple[str, int]]
                  ) -> list[FhirJSON]:
    """PUT entries for the Tasks among ``keys`` whose server status is not what is wanted."""
    t = worklist_tasks.c
    if not keys:
        return []
    with ws.engine.connect() as conn:
        rows = [row for fid, ep in keys for row in conn.execute(select(worklist_tasks).where(
            t.finding_id == fid, t.episode == ep, (t.written.is_(None)) | (t.written != t.wanted)
        )).all()]
    if not rows:
        return []
    found = states(ws, {row.finding_id for row in rows})
    return [{"resource": task_resource(settings, row, found.get(row.finding_id)),
             "request": {"method": "PUT", "url": f"Task/{row.task_id}"}} for row in rows]


def _tasks_written(ws: WatchStore, keys: Sequence[tuple[str, int]]) -> None:
    t = worklist_tasks.c
    with ws.store._writer(), ws.engine.begin() as conn:
        for fid, ep in keys:
            conn.execute(update(worklist_tasks).where(t.finding_id == fid, t.episode == ep)
                         .values(written=t.wanted, error=None))


@dataclass
class SyncResult:
    tasks_written: list[str] = field(default_factory=list)
    orders_read: int = 0
    resolutions_written: int = 0
    errors: list[str] = field(default_factory=list)


def _quiet(ws: WatchStore, finding_ids: Sequence[str]) -> bool:
    """Nothing for the worklist to do after a re-check that changed nothing: no resolution
    (a finding may come back with new numbers), no Task waiting to be written, every order
    already read."""
    if not finding_ids:
        return True
    ids = sorted(set(finding_ids))
    res, t, o = worklist_resolutions.c, worklist_tasks.c, worklist_orders.c
    with ws.engine.connect() as conn:
        if conn.execute(select(res.id).where(res.finding_id.in_(ids)).limit(1)).first():
            return False
        if conn.execute(select(t.task_id).where(
                t.finding_id.in_(ids), (t.written.is_(None)) | (t.written != t.wanted))
                .limit(1)).first():
            return False
        read = conn.execute(select(func.count()).where(o.finding_id.in_(ids))).scalar()
    return int(read or 0) == len(ids)


def sync(ws: WatchStore, settings: Any, client: FhirClient, kb: Any, now: datetime,
         patient_ref: str | None = None, changes: Sequence[Any] | None = None) -> SyncResult:
    """Bring the server in line with the worklist (run by the worker after each re-check and
    every WATCH_CHECK_S; after a re-check that changed nothing, not when ``_quiet`` finds
    nothing to do): the orders of new entries read; with WATCH_TASK_OWNER, a Task for
    each open high or moderate finding episode, completed once resolved, cancelled once the
    finding is; the mitigations not yet written. Idempotent; what fails is tried next time."""
    result = SyncResult()
    if patient_ref is not None and changes is not None and all(
            c.change == "unchanged" for c in changes) and _quiet(
            ws, [c.finding_id for c in changes]):
        return result
    deadline = Deadline(max(settings.outbound_timeout_s * 5, 10.0))
    t, f = worklist_tasks.c, watch_findings.c
    ids: set[str] = set()
    with ws.engine.connect() as conn:
        if patient_ref is not None:   # after a re-check: that patient's findings only
            ids = {str(r.finding_id) for r in conn.execute(
                select(f.finding_id).where(f.patient_ref == patient_ref).distinct()).all()}
        query = select(t.finding_id, t.episode, t.wanted).where(t.wanted == "requested")
        if patient_ref is not None:
            query = query.where(t.finding_id.in_(sorted(ids) or [""]))
        pending_tasks = [(str(row.finding_id), int(row.episode), str(row.wanted))
                         for row in conn.execute(query).all()]
    found = states(ws, ids) if patient_ref is not None else states(ws)
    found.update(states(ws, {fid for fid, _, _ in pending_tasks} - set(found)))
    for state in found.values():
        if state.status == "open" and state.medication is None:
            try:
                _read_order(ws, client, kb, state, deadline, now)
                result.orders_read += 1
            except FetchFailure as failure:
                result.errors.append(f"{state.last.order_ref}: {failure.reason}")
    if settings.watch_task_owner:
        _plan_tasks(ws, found, pending_tasks, now)
        _write_tasks(ws, settings, client, deadline, result)
    if patient_ref is None:
        _retry_resolutions(ws, settings, client, deadline, result)
    return result


def _plan_tasks(ws: WatchStore, found: dict[str, State],
                pending: list[tuple[str, int, str]], now: datetime) -> None:
    """A Task row for each open high/moderate episode without one; the requested Tasks of
    findings that were cancelled (or moved to a new episode without a resolution) to be
    cancelled. Writes only when there is something to write."""
    t = worklist_tasks.c
    new = [(s.finding_id, s.episode) for s in found.values()
           if s.status == "open" and s.last.severity in TASK_PRIORITY and s.task is None]
    cancel = []
    for fid, episode, _ in pending:
        state = found.get(fid)
        if state is not None and (state.status == "cancelled" or (
                state.episode != episode and state.status == "open"
                and state.reopened_after is None)):
            cancel.append((fid, episode))
    if not new and not cancel:
        return
    with ws.store._writer(), ws.engine.begin() as conn:
        for fid, episode in new:
            try:
                with conn.begin_nested():
                    conn.execute(insert(worklist_tasks).values(
                        finding_id=fid, episode=episode, task_id=task_id(fid, episode),
                        wanted="requested", written=None, created=now, updated=now))
            except IntegrityError:
                pass   # another worker planned it
        for fid, episode in cancel:
            conn.execute(update(worklist_tasks).where(
                t.finding_id == fid, t.episode == episode, t.wanted == "requested")
                .values(wanted="cancelled", updated=now))


def _write_tasks(ws: WatchStore, settings: Any, client: FhirClient, deadline: Deadline,
                 result: SyncResult) -> None:
    t = worklist_tasks.c
    with ws.engine.connect() as conn:
        keys = [(str(r.finding_id), int(r.episode)) for r in conn.execute(
            select(t.finding_id, t.episode).where(
                (t.written.is_(None)) | (t.written != t.wanted))
            .order_by(t.created)).all()]
    for chunk in _chunks(keys, TASK_BATCH):
        entries = _task_entries(ws, settings, chunk)
        if not entries:
            continue
        try:
            client.transaction({"resourceType": "Bundle", "type": "transaction",
                                "entry": entries}, deadline)
        except FetchFailure as failure:
            result.errors.append(f"Tasks: {failure}")
            log.warning("the worklist Tasks could not be written; tried again later",
                        extra={"event": "worklist-tasks-failed", "reason": failure.reason})
            return
        _tasks_written(ws, chunk)
        result.tasks_written += [e["resource"]["id"] for e in entries]


def _retry_resolutions(ws: WatchStore, settings: Any, client: FhirClient, deadline: Deadline,
                       result: SyncResult) -> None:
    r = worklist_resolutions.c
    with ws.engine.connect() as conn:
        waiting = [dict(row._mapping) for row in conn.execute(
            select(worklist_resolutions).where(r.server == "pending").order_by(r.id)).all()]
    for record in waiting:
        try:
            write_resolution(ws, settings, client, record, deadline)
            result.resolutions_written += 1
        except FetchFailure as failure:
            result.errors.append(f"{record['detected_issue']}: {failure.reason}")


# --- the order, as the pharmacist reads it --------------------------------------------------

def medication_summary(order: FhirJSON, medication: FhirJSON | None, kb: Any,
                       now: datetime) -> dict[str, Any]:
    """Product, dose as written with its frequency, daily mg (None when it cannot be read)."""
    ref = f"MedicationRequest/{order.get('id')}"

    def resolve(reference: Any, within: FhirJSON | None = None) -> FhirJSON | None:
        wanted = as_str(as_dict(reference).get("reference")) if isinstance(reference, dict) \
            else as_str(reference)
        if medication is not None and wanted and unversioned(wanted).endswith(
                f"Medication/{medication.get('id')}"):
            return medication
        return None

    facts = read_order(order, ref, resolve, kb, now, checked=True)
    step = facts.first_step
    doses = []
    for line in step.lines if step else ():
        how = times_per_day(line.per_day) if line.per_day else ""
        doses.append(" ".join(x for x in (line.written, "as needed" if line.prn else "", how)
                              if x))
    daily = step.daily_mg if step is not None else None
    texts = [as_str(as_dict(d).get("text")) for d in order.get("dosageInstruction") or []]
    return {"product": facts.name, "route": facts.route, "dose": "; ".join(doses) or None,
            "dosageText": "; ".join(t for t in texts if t) or None,
            "dailyMg": float(fmt(daily, 3)) if daily is not None else None,
            "status": facts.status}


def _read_order(ws: WatchStore, client: FhirClient, kb: Any, state: State, deadline: Deadline,
                now: datetime) -> None:
    order = client.read(state.last.order_ref, deadline)
    med_ref = as_str(as_dict(order.get("medicationReference")).get("reference"))
    medication = None
    if med_ref and med_ref.startswith("Medication/"):
        try:
            medication = client.read(med_ref, deadline)
        except FetchFailure:
            medication = None   # the product is then named from the order alone
    summary = medication_summary(order, medication, kb, now)
    o = worklist_orders.c
    with ws.store._writer(), ws.engine.begin() as conn:
        if conn.execute(select(o.finding_id).where(o.finding_id == state.finding_id)).first():
            return
        conn.execute(insert(worklist_orders).values(finding_id=state.finding_id,
                                                    medication=summary, read=now))
    state.medication = summary
