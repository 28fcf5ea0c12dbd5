"""Golden results: what the service answers for the realistic fixtures, kept under
``fixtures/expected/`` and compared by tests/api/test_golden.py.

Each native request (a Bundle or Parameters in ``fixtures/``) gives ``<name>.native.json``:
the ``$check`` result Bundle. Each CDS Hooks call (``fixtures/cds-*.json``) gives
``<name>.cards.json``: the cards. Each real-client fixture (``fixtures/real-clients/``) gives
both, of the request as that client sends it (``shape``). Volatile values are replaced before
comparing or writing: uuids, the content-hash ids of findings, the knowledge version (it
changes on every release), timestamps and request ids. The check time is fixed (``NOW``,
given to the app as its clock).

Regenerate after an intended change of output:  make golden
(``python -m tests.support.golden``), then read the diff of fixtures/expected/ before
committing it.
"""

from __future__ import annotations

import difflib
import json
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient

from service import create_app
from service.clock import fixed_clock
from service.knowledge import load
from tests.support.cdsclient import HOOKS, SIGN, hook_call, searchset
from tests.support.fixtures import FIXTURES

EXPECTED = FIXTURES / "expected"
REGENERATE = "make golden"
NOW = datetime(2026, 11, 25, 10, tzinfo=UTC)
SERVICE_OF_HOOK = {hook: service for service, hook in HOOKS.items()}

# fixtures that are not a check request: feedback bodies
NOT_REQUESTS = {"cds-feedback"}

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HASH = re.compile(r"\b[0-9a-f]{40}\b")
_VOLATILE_KEYS = frozenset({"timestamp", "lastUpdated", "requestId", "request_id",
                            "latency_ms", "latencyMs", "recordId", "record_id"})


@dataclass(frozen=True)
class Case:
    name: str  # the expected file's path below fixtures/expected/, without .json
    answer: Callable[[FlaskClient], Any]

    @property
    def path(self) -> Path:
        return EXPECTED / f"{self.name}.json"


def golden_app() -> Any:
    """The app the golden results come from: the given settings only, a fixed clock."""
    home = Path(tempfile.mkdtemp(prefix="baclofen-check-golden-"))
    return create_app({
        "API_REQUIRE_AUTH": False, "CDS_REQUIRE_JWT": False, "BACLOFEN_PROFILE": "us",
        "DATABASE_URL": f"sqlite:///{home}/audit.sqlite3", "SPOOL_DIR": str(home / "spool"),
        "TESTING": True,
    }, clock=fixed_clock(NOW))


def scrub(value: Any, version: str) -> Any:
    """``value`` with its volatile parts replaced by placeholders."""
    if isinstance(value, dict):
        return {k: "<volatile>" if k in _VOLATILE_KEYS else scrub(v, version)
                for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v, version) for v in value]
    if isinstance(value, str):
        text = _UUID.sub("<uuid>", value)
        text = _HASH.sub("<hash>", text)
        return text.replace(version, "<knowledge-version>")
    return value


def _native(body: dict[str, Any]) -> Callable[[FlaskClient], Any]:
    def answer(client: FlaskClient) -> Any:
        resp = client.post("/MedicationRequest/$check", json=body,
                           headers={"Content-Type": "application/fhir+json"})
        return {"status": resp.status_code, "body": resp.get_json()}
    return answer



def _cards(body: dict[str, Any], service: str) -> Callable[[FlaskClient], Any]:
    def answer(client: FlaskClient) -> Any:
        resp = client.post(f"/cds-services/{service}", json=body)
        return {"status": resp.status_code, "body": resp.get_json()}
    return answer


def _dated(text: str) -> str:
    """A real-client fixture's placeholders set from the fixed check time."""
    stamp = NOW.isoformat().replace("+00:00", "Z")
    recent = (NOW - timedelta(days=5)).isoformat().replace("+00:00", "Z")
    return (text.replace("$now", stamp).replace("$today", NOW.date().isoformat())
            .replace("$recent", recent))


def _real_client(name: str, fx: dict[str, Any]) -> Iterator[Case]:
    req = fx["shape"]
    params: list[dict[str, Any]] = [{"name": "order", "resource": o} for o in req["orders"]]
    params.append({"name": "patient", "resource": fx["patient"]})
    params += [{"name": "context", "resource": r}
               for r in req.get("siblings", []) + fx["context"]]
    yield Case(f"real-clients/{name}.native",
               _native({"resourceType": "Parameters", "parameter": params}))
    call = hook_call(*req["orders"], *req.get("siblings", []), service=SIGN,
                     patient=fx["patient"],
                     prefetch={"creatinineClearance": searchset(*fx["context"])})
    call["hookInstance"] = f"golden-{name}"
    yield Case(f"real-clients/{name}.cards", _cards(call, SIGN))


def cases() -> list[Case]:
    """One case per golden file, in file-name order."""
    found: list[Case] = []
    for path in sorted(FIXTURES.glob("*.json")):
        if path.stem in NOT_REQUESTS:
            continue
        body = json.loads(path.read_text(encoding="utf-8"))
        if "hook" in body:
            found.append(Case(f"{path.stem}.cards", _cards(body, SERVICE_OF_HOOK[body["hook"]])))
        else:
            found.append(Case(f"{path.stem}.native", _native(body)))
    for path in sorted((FIXTURES / "real-clients").glob("*.json")):
        found += _real_client(path.stem, json.loads(_dated(path.read_text(encoding="utf-8"))))
    return found


def actual(case: Case, client: FlaskClient) -> str:
    """The scrubbed answer as the golden file holds it."""
    return json.dumps(scrub(case.answer(client), load().version), indent=2, ensure_ascii=False,
                      sort_keys=True) + "\n"


def difference(case: Case, got: str) -> str | None:
    """None when the golden file holds ``got``; else a readable diff and how to regenerate."""
    want = case.path.read_text(encoding="utf-8") if case.path.exists() else ""
    if want == got:
        return None
    rel = case.path.relative_to(FIXTURES.parent)
    diff = "".join(difflib.unified_diff(want.splitlines(keepends=True),
                                        got.splitlines(keepends=True),
                                        f"{rel} (expected)", f"{rel} (now)", n=3))
    return (f"{rel} differs from what the service answers now"
            f"{' (no golden file yet)' if not want else ''}:\n{diff}\n"
            f"If the change is intended, regenerate with `{REGENERATE}` and review the diff.")


def main() -> int:
    """Write every golden file; say which changed."""
    client = golden_app().test_client()
    wanted = set()
    for case in cases():
        got = actual(case, client)
        wanted.add(case.path)
        if not case.path.exists() or case.path.read_text(encoding="utf-8") != got:
            case.path.parent.mkdir(parents=True, exist_ok=True)
            case.path.write_text(got, encoding="utf-8")
            print(f"written: {case.path.relative_to(FIXTURES.parent)}")
    for stale in sorted(set(EXPECTED.rglob("*.json")) - wanted):
        stale.unlink()
        print(f"removed (no fixture any more): {stale.relative_to(FIXTURES.parent)}")
    print(f"{len(wanted)} golden files in {EXPECTED.relative_to(FIXTURES.parent)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
