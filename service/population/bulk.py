"""``review --fhir-server URL``: a Bulk Data ``$export`` kicked off, waited for and downloaded.

1. Kick-off: ``GET [base]/$export`` (or ``[base]/Group/{id}/$export``) with ``Prefer:
   respond-async`` (and ``handling=lenient``: a server that does not know a parameter says
   so in its error file instead of failing), ``_type`` limited to what the rules read,
   ``_typeFilter`` narrowing Observations to the codes the rules read (the same codes as the
   CDS prefetch queries; asked once more without it when the server answers 400), and
   ``_since`` when given. The answer must be ``202`` with a ``Content-Location``.
2. Status: polled, honouring ``Retry-After`` (seconds or an HTTP date; 1 s when absent, at
   most 60 s), with ``X-Progress`` on the progress bar; ``200`` gives the manifest.
3. Files: each ``output`` URL downloaded as it comes (streamed to disk) into the export
   directory, named by its type; the manifest is kept beside them; the server's error files
   are kept under ``errors/`` and counted, not read. The job is deleted on the server after.

Every URL called must be under FHIR_ALLOWLIST (the status URL and the file URLs included);
redirects are not followed; the ``Authorization`` header is the configured FHIR server
authentication (``FHIR_SERVER_AUTH``: none, a bearer token or SMART Backend Services), sent
only to allowed URLs.

With ``--since`` the export lists only what changed; a check needs the whole record, so each
patient touched is then read in full by the by-id searches (service/fhir_input/server.py's
queries, the same as the CDS prefetch) and written as a second export that is reviewed.
"""

from __future__ import annotations

import gzip
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import requests

from ..assemble.queries import context_queries, prefetch_templates
from ..config import Settings
from ..fhir_input.fetch import FhirClient, fhir_server_client
from ..knowledge import Knowledge
from ..outbound.allowlist import allowed
from ..outbound.deadline import Deadline, FetchFailure
from ..outbound.pool import fetch_all
from .export import READ_TYPES

EXPORT_TIMEOUT_S = 3600.0
MAX_WAIT_S = 60.0
CALL_TIMEOUT_S = 60.0
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


class BulkError(Exception):
    """The export could not be had; the message says which step and why (never a token)."""


def type_filter(kb: Knowledge) -> str:
    """One ``_typeFilter`` query for Observation: every code the rules read (the CDS
    prefetch's Observation queries, joined). Commas inside the query are escaped, so that a
    server splitting the parameter's list on commas keeps the query whole."""
    codes: list[str] = []
    for query in prefetch_templates(kb).values():
        if not query.startswith("Observation?"):
            continue
        for part in query.split("?", 1)[1].split("&"):
            if part.startswith("code="):
                codes += part[len("code="):].split(",")
    return "Observation?code=" + "%2C".join(dict.fromkeys(codes))


def _auth(settings: Settings, deadline: Deadline, refused: str | None = None
          ) -> dict[str, str]:
    """The configured FHIR server authentication, as for the by-id reads."""
    try:
        from ..outbound import fhir_server_headers  # SMART Backend Services, when present
    except ImportError:
        token = settings.fhir_server_token
        return {"Authorization": f"Bearer {token}"} if token else {}
    try:
        return fhir_server_headers(settings, deadline, refused)
    except FetchFailure as failure:
        raise BulkError(f"no access token for the FHIR server: {failure.message}") from failure


def _show(url: str) -> str:
    return url.split("?", 1)[0]


class BulkClient:
    def __init__(self, base_url: str, settings: Settings,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.base = base_url.rstrip("/")
        self.settings = settings
        self.allowlist = tuple(settings.fhir_allowlist) or (self.base,)
        self.sleep = sleep

    def _call(self, method: str, url: str, stream: bool = False,
              accept: str = "application/fhir+json", prefer: str | None = None
              ) -> requests.Response:
        if not allowed(url, self.allowlist):
            raise BulkError(f"{_show(url)} is not under FHIR_ALLOWLIST; not called")
        deadline = Deadline(CALL_TIMEOUT_S)
        refused: str | None = None
        for _attempt in range(2):
            headers = {"Accept": accept, **_auth(self.settings, deadline, refused)}
            if prefer:
                headers["Prefer"] = prefer
            try:
                resp = requests.request(method, url, headers=headers, stream=stream,
                                        allow_redirects=False, timeout=CALL_TIMEOUT_S)
            except requests.RequestException as exc:
                raise BulkError(f"{_show(url)} could not be reached "
                                f"({type(exc).__name__})") from exc
            if resp.status_code == 401 and "Authorization" in headers and refused is None:
                refused = headers["Authorization"]   # a new token, once
                resp.close()
                continue
            return resp
        return resp

    @staticmethod
    def _problem(resp: requests.Response, what: str) -> BulkError:
        detail = ""
        try:
            body = resp.json()
            issues = body.get("issue", []) if isinstance(body, dict) else []
            texts = [str(i.get("diagnostics") or i.get("code")) for i in issues
                     if isinstance(i, dict)]
            detail = ": " + "; ".join(texts)[:300] if texts else ""
        except ValueError:
            pass
        return BulkError(f"{what} answered HTTP {resp.status_code}{detail}")

    def kick_off(self, group: str | None, since: str | None, kb: Knowledge) -> str:
        path = f"Group/{quote(group, safe='')}/$export" if group else "$export"
        params = {"_type": ",".join(READ_TYPES), "_typeFilter": type_filter(kb)}
        if since:
            params["_since"] = since
        url = f"{self.base}/{path}?{urlencode(params, safe=',|')}"
        resp = self._call("GET", url, prefer="respond-async, handling=lenient")
        if resp.status_code == 400:
            # choice: a server that refuses _typeFilter (an optional parameter) is asked
            # once more without it: the export is larger, the review the same
            resp.close()
            del params["_typeFilter"]
            url = f"{self.base}/{path}?{urlencode(params, safe=',|')}"
            resp = self._call("GET", url, prefer="respond-async, handling=lenient")
        with resp:
            if resp.status_code != 202:
                raise self._problem(resp, f"the export kick-off ({_show(url)})")
            location = resp.headers.get("Content-Location")
        if not location:
            raise BulkError("the export kick-off answered 202 without a Content-Location")
        return location

    def wait(self, status_url: str, progress: Callable[[str, int, int], None] | None,
             timeout_s: float = EXPORT_TIMEOUT_S) -> dict[str, Any]:
        started = time.monotonic()
        while True:
            resp = self._call("GET", status_url)
            with resp:
                if resp.status_code == 200:
                    try:
                        manifest = resp.json()
                    except ValueError as exc:
                        raise BulkError("the export's manifest is not JSON") from exc
                    if not isinstance(manifest, dict) or not isinstance(
                            manifest.get("output"), list):
                        raise BulkError("the export's manifest has no output list")
                    return manifest
                if resp.status_code not in (202, 429):
                    raise self._problem(resp, "the export status")
                waited = time.monotonic() - started
                if progress:
                    text = resp.headers.get("X-Progress", "in progress")[:40]
                    pct = re.search(r"(\d{1,3}(?:\.\d+)?)\s*%", text)
                    if pct:   # a server that says how far it is
                        progress(f"export {text}", min(100, int(float(pct.group(1)))), 100)
                    else:
                        progress(f"export: {text}", int(waited), 0)
                delay = retry_after(resp.headers.get("Retry-After"))
            if time.monotonic() - started + delay > timeout_s:
                raise BulkError(f"the export did not complete within {timeout_s:g} s")
            self.sleep(delay)

    def download(self, manifest: dict[str, Any], dest: Path,
                 progress: Callable[[str, int, int], None] | None) -> int:
        dest.mkdir(parents=True, exist_ok=True)
        outputs = [o for o in manifest.get("output", []) if isinstance(o, dict)]
        errors = [o for o in manifest.get("error", []) if isinstance(o, dict)]
        for n, item in enumerate(outputs + errors):
            url = str(item.get("url", ""))
            kind = str(item.get("type") or "output")
            folder = dest / "errors" if n >= len(outputs) else dest
            folder.mkdir(exist_ok=True)
            gz = ".gz" if url.split("?")[0].endswith(".gz") else ""
            name = _SAFE_NAME.sub("_", f"{kind}_{n:04d}.ndjson{gz}")
            resp = self._call("GET", url, stream=True, accept="application/fhir+ndjson")
            with resp:
                if resp.status_code != 200:
                    raise self._problem(resp, f"the export file {_show(url)}")
                with open(folder / name, "wb") as out:
                    for chunk in resp.iter_content(1 << 16):
                        out.write(chunk)
            if progress:
                progress("download", n + 1, len(outputs) + len(errors))
        (dest / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        return len(errors)

    def delete(self, status_url: str) -> None:
        try:
            self._call("DELETE", status_url).close()
        except BulkError:
            pass  # the server keeps the files until it expires them


def retry_after(value: str | None) -> float:
    """Seconds to wait: ``Retry-After`` in seconds or as an HTTP date; 1 s when absent."""
    if not value:
        return 1.0
    value = value.strip()
    if value.isdigit():
        return min(MAX_WAIT_S, max(0.0, float(value)))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 1.0
    if when.tzinfo is None:
        return 1.0
    return min(MAX_WAIT_S, max(0.0, (when - datetime.now(UTC)).total_seconds()))


def _touched_patients(directory: Path) -> list[str]:
    """Patient ids named by what an incremental export holds."""
    pattern = re.compile(r"(?:^|/)Patient/([^/]+?)(?:/_history/[^/]*)?$")
    ids: set[str] = set()
    for path in sorted(directory.glob("*.ndjson*")):
        opener: Any = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8", errors="replace") as stream:
            for line in stream:
                try:
                    res = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(res, dict):
                    continue
                if res.get("resourceType") == "Patient" and isinstance(res.get("id"), str):
                    ids.add(res["id"])
                    continue
                for key in ("subject", "patient"):
                    ref = res.get(key)
                    if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
                        m = pattern.search(ref["reference"])
                        if m:
                            ids.add(m.group(1))
    return sorted(ids)


def _record_calls(client: FhirClient, pid: str, kb: Knowledge, deadline: Deadline
                  ) -> dict[str, Callable[[], Any]]:
    def read() -> list[Any]:
        return [client.read(f"Patient/{quote(pid, safe='')}", deadline)]

    calls: dict[str, Callable[[], Any]] = {"patient": read}
    for key, query in context_queries(kb, pid).items():
        calls[key] = (lambda q: lambda: client.search(q, deadline))(query)
    return calls


def _whole_records(pids: list[str], client: FhirClient, dest: Path, kb: Knowledge,
                   timeout_s: float, progress: Callable[[str, int, int], None] | None
                   ) -> int:
    """Each patient's whole record by the by-id searches, written as NDJSON per type."""
    dest.mkdir(parents=True, exist_ok=True)
    streams: dict[str, Any] = {}
    failed = 0
    seen: set[str] = set()
    try:
        for n, pid in enumerate(pids):
            deadline = Deadline(timeout_s)
            results = fetch_all(_record_calls(client, pid, kb, deadline), deadline)
            if any(isinstance(v, FetchFailure) for v in results.values()):
                failed += 1
                continue
            for value in results.values():
                for res in value if isinstance(value, list) else []:
                    rtype, rid = res.get("resourceType"), res.get("id")
                    key = f"{rtype}/{rid}"
                    if rtype not in READ_TYPES or key in seen:
                        continue
                    if rtype == "Medication":
                        seen.add(key)
                    if rtype not in streams:
                        streams[rtype] = open(dest / f"{rtype}.ndjson", "w",  # noqa: SIM115
                                              encoding="utf-8")
                    streams[rtype].write(json.dumps(res) + "\n")
            if progress:
                progress("records", n + 1, len(pids))
    finally:
        for s in streams.values():
            s.close()
    return failed


def export_to(base_url: str, dest: Path, settings: Settings, group: str | None,
              since: str | None, kb: Knowledge,
              progress: Callable[[str, int, int], None] | None = None) -> Path:
    """Run the export and download it into ``dest``; returns the directory to review."""
    bulk = BulkClient(base_url, settings)
    status = bulk.kick_off(group, since, kb)
    manifest = bulk.wait(status, progress)
    try:
        bulk.download(manifest, dest, progress)
    finally:
        bulk.delete(status)
    if not since:
        return dest
    pids = _touched_patients(dest)
    client = _client(base_url, settings)
    whole = dest.parent / (dest.name + "-records")
    failed = _whole_records(pids, client, whole, kb, max(10.0, settings.outbound_timeout_s * 5),
                            progress)
    if failed:
        raise BulkError(f"the whole record of {failed} of the {len(pids)} patients changed "
                        "since --since could not be read; nothing was reviewed")
    return whole


def _client(base_url: str, settings: Settings) -> FhirClient:
    """The client of the run's FHIR server (``settings`` name it: the review command sets
    FHIR_SERVER_URL to ``base_url`` when it was not set)."""
    return fhir_server_client(settings)
