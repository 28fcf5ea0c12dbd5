"""A finished Bulk Data export directory -> each patient's record, grouped out of core.

Files read (top level of the directory; plain ``.ndjson`` or gzip ``.ndjson.gz``):

- a file whose name starts with a resource type the rules read (``Patient``,
  ``MedicationRequest``, ``MedicationStatement``, ``MedicationDispense``, ``Medication``,
  ``Observation``, ``Condition``, ``Procedure``: ``Observation.ndjson``,
  ``Observation_2.ndjson.gz``, ``Observation-000.ndjson`` ...);
- a file whose name starts with no FHIR resource type (``output_1.ndjson``): read as mixed,
  the shape of ``organizeOutputBy=Patient`` blocks; lines of types the rules do not read are
  counted and left;
- a file named after another resource type (``Encounter.ndjson``) is not opened (counted);
  so are the export's error files (``OperationOutcome*``) and anything not NDJSON.

DuckDB reads each file line by line (``read_csv`` with one text column, the line number from
``WITH ORDINALITY``) into a database file under a temporary directory, with a memory limit,
so that an export larger than memory is grouped on disk. Every resource is joined to its
patient by ``subject`` or ``patient`` (``Patient/{id}``, an absolute URL or ``_history``
form), a Patient by its id, and a Medication to every patient whose request, statement or
dispense references it. A resource that appears more than once (same type and id) is read
once: the last occurrence (the export's newest).

Only patients with an active MedicationRequest that may be baclofen are handed out (the
superset test: the request's line holds, in any case, a word or code of the knowledge's
baclofen recognition (the word, the brands, the RxNorm and ATC codes), or uses a
``medicationReference``, or holds a ``\\u`` escape); the check itself decides.

What cannot be read is a ``Problem`` with the file and the line: not UTF-8, a line over the
size limit, not JSON, not a FHIR resource, a resource that names no patient, an order whose
patient has no Patient resource.
"""

from __future__ import annotations

import gzip
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..knowledge import Knowledge

READ_TYPES = ("Patient", "MedicationRequest", "MedicationStatement", "MedicationDispense",
              "Medication", "Observation", "Condition", "Procedure")
MEDICATION_USERS = ("MedicationRequest", "MedicationStatement", "MedicationDispense")
_NAME_TYPE = re.compile(r"^([A-Z][A-Za-z]+)")
PATIENTS_PER_CHUNK = 2000


class GroupingError(ConfigError):
    """DuckDB could not group the export within its memory limit (the review stops: a
    review with part of the export left out would look complete)."""


@dataclass(frozen=True)
class Problem:
    """Something in the export that could not be read or used."""

    file: str
    line: int | None
    message: str
    severity: str = "error"      # error: not read; warning: read but not used; information
    code: str = "invalid"


@dataclass
class ExportFile:
    path: Path
    kind: str | None             # the resource type its name gives, None for a mixed file


@dataclass
class Located:
    """One resource line of a patient's record."""

    rtype: str
    file: str
    line: int
    text: str


@dataclass
class Record:
    """One patient's resources (the Patient first when present)."""

    pid: str
    lines: list[Located]


@dataclass
class LoadStats:
    files: list[dict[str, Any]] = field(default_factory=list)
    skipped_files: list[str] = field(default_factory=list)
    lines: int = 0
    resources: dict[str, int] = field(default_factory=dict)   # read, by type
    ignored: dict[str, int] = field(default_factory=dict)     # types the rules do not read
    patients: int = 0
    candidates: int = 0


def _is_resource_type(name: str) -> bool:
    from fhir.resources.R4B import get_fhir_model_class  # lazy: loads the FHIR models

    try:
        get_fhir_model_class(name)
    except (KeyError, ValueError):
        return False
    return True


def discover(directory: Path) -> tuple[list[ExportFile], list[str]]:
    """The files to read, and the names left unopened."""
    files: list[ExportFile] = []
    skipped: list[str] = []
    for path in sorted(directory.iterdir()):
        if not path.is_file():
            continue
        read, kind = file_kind(path.name)
        if read:
            files.append(ExportFile(path, kind))
        elif path.name != "manifest.json":
            skipped.append(path.name)
    return files, skipped


def file_kind(name: str) -> tuple[bool, str | None]:
    """Whether a file of the export (by its name) is read, and the resource type its name
    gives (None: a mixed file, or a file not read)."""
    if not name.endswith((".ndjson", ".ndjson.gz")):
        return False, None
    m = _NAME_TYPE.match(name)
    head = m.group(1) if m else ""
    if head in READ_TYPES:
        return True, head
    if head and _is_resource_type(head):
        return False, None   # a type the rules do not read, or the error files
    return True, None


def screening_terms(kb: Knowledge) -> list[str]:
    """Every baclofen_* entry of the knowledge's recognition (word, brands, codes), lower
    case: a line of an active MedicationRequest holding none of them (and no
    medicationReference, no \\u escape) is not baclofen."""
    terms: set[str] = set()
    for key, value in kb.recognition.items():
        if str(key).startswith("baclofen_") and not str(key).endswith("_source"):
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, str | int) and str(item).strip():
                    terms.add(str(item).strip().lower())
    return sorted(terms)


def _newline(path: Path) -> str:
    """The file's line ending (DuckDB's reader counts a CR of CRLF as a line of its own
    unless told)."""

    opener: Any = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as stream:
            head = stream.read(1 << 20)
    except (OSError, EOFError):
        return "\\n"
    at = head.find(b"\n")
    return "\\r\\n" if at > 0 and head[at - 1:at] == b"\r" else "\\n"


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class ExportReader:
    """Loads an export directory into DuckDB and hands out the records to check."""

    def __init__(self, directory: Path, kb: Knowledge, max_line_bytes: int,
                 memory_limit: str = "128MB", workdir: Path | None = None) -> None:
        import duckdb  # lazy: only a review loads DuckDB

        self.directory = directory
        self.kb = kb
        self.max_line_bytes = max_line_bytes
        self._tmp = tempfile.TemporaryDirectory(prefix="baclofen-review-",
                                                dir=str(workdir) if workdir else None)
        db = os.path.join(self._tmp.name, "export.duckdb")
        self.con = duckdb.connect(db)
        try:
            self.con.execute(f"SET memory_limit = {_sql_text(memory_limit)}")
        except duckdb.Error as exc:
            self.close()
            raise GroupingError(f"--memory-limit {memory_limit!r} is not a memory size "
                                "(e.g. 128MB, 2GB)") from exc
        self.con.execute(f"SET temp_directory = {_sql_text(self._tmp.name)}")
        # choice: one thread: with two, DuckDB could not keep the join of the checked
        # patients' texts within a small memory limit (100,000 patients at 128MB failed);
        # with one it spills to disk and the memory of a review stays flat in the size of
        # the export (bench part population)
        self.con.execute("SET threads = 1")
        # (one thread reads each file in order, so WITH ORDINALITY is the line number
        # without insertion order being kept)
        self.con.execute("SET preserve_insertion_order = false")
        self.con.execute("SET enable_progress_bar = false")
        self.memory_limit = memory_limit
        self.stats = LoadStats()
        self.problems: list[Problem] = []
        self._names: list[str] = []

    def close(self) -> None:
        try:
            self.con.close()
        finally:
            self._tmp.cleanup()

    def __enter__(self) -> ExportReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- loading ----------------------------------------------------------------------------

    def _out_of_memory(self, exc: Exception) -> GroupingError:
        return GroupingError(f"DuckDB ran out of memory grouping the export (memory limit "
                             f"{self.memory_limit}); run again with a larger --memory-limit")

    def load(self) -> None:
        import duckdb  # lazy: only a review loads DuckDB

        try:
            self._load()
        except duckdb.OutOfMemoryException as exc:
            raise self._out_of_memory(exc) from exc

    def _load(self) -> None:
        files, skipped = discover(self.directory)
        self.stats.skipped_files = skipped
        con = self.con
        con.execute("CREATE TABLE raw (fno INTEGER, line BIGINT, text VARCHAR)")
        for fno, f in enumerate(files):
            self._names.append(f.path.name)
            self._load_file(fno, f)
        self._resources()
        self._select()

    def _load_file(self, fno: int, f: ExportFile) -> None:
        import duckdb  # lazy: only a review loads DuckDB

        con = self.con
        before = self._scan_id()
        options = (
            "columns = {'line': 'VARCHAR'}, delim = '\\x01', quote = '', escape = '', "
            "comment = '', header = false, auto_detect = false, strict_mode = false, "
            f"ignore_errors = true, store_rejects = true, "
            f"max_line_size = {max(1024, int(self.max_line_bytes))}, "
            # (the reader's default buffer is 16 lines of the largest size: 80MB for 5MB)
            f"buffer_size = {max(4 << 20, 2 * int(self.max_line_bytes))}, "
            f"new_line = '{_newline(f.path)}', compression = "
            f"'{'gzip' if f.path.name.endswith('.gz') else 'none'}'")
        try:
            # (the options are made here; the path is a parameter)
            sql = (f"INSERT INTO raw SELECT {fno}, ord, line FROM read_csv(?, {options}) "  # noqa: S608
                   "WITH ORDINALITY AS t(line, ord) WHERE line IS NOT NULL AND trim(line) <> ''")
            con.execute(sql, [str(f.path)])
        except duckdb.OutOfMemoryException:
            raise   # not the file's fault: the review stops (load)
        except Exception as exc:  # noqa: BLE001 - a file that cannot be read is reported
            self.problems.append(Problem(f.path.name, None, "the file cannot be read "
                                         f"({type(exc).__name__}); nothing of it was used",
                                         code="exception"))
            self.stats.files.append({"name": f.path.name, "type": f.kind, "lines": 0})
            return
        rejected = self._rejects(before)
        if rejected:
            self._renumber(fno, [line for line, _ in rejected])
            for line, kind in rejected:
                why = ("is not UTF-8 text" if "ENCODING" in kind else
                       f"is longer than {self.max_line_bytes} bytes (MAX_REQUEST_BYTES)"
                       if "LINE SIZE" in kind else f"cannot be read ({kind.lower()})")
                self.problems.append(Problem(f.path.name, line, f"the line {why}; not read",
                                             code="too-costly" if "LINE SIZE" in kind
                                             else "invalid"))
        row = con.execute("SELECT count(*) FROM raw WHERE fno = ?", [fno]).fetchone()
        count = int(row[0]) if row else 0
        self.stats.lines += count
        self.stats.files.append({"name": f.path.name, "type": f.kind, "lines": count})

    def _scan_id(self) -> int:
        try:
            row = self.con.execute("SELECT max(scan_id) FROM reject_scans").fetchone()
        except Exception:  # noqa: BLE001 - no reject table until the first rejected line
            return -1
        return int(row[0]) if row and row[0] is not None else -1

    def _rejects(self, before: int) -> list[tuple[int, str]]:
        try:
            rows = self.con.execute(
                "SELECT DISTINCT line, CAST(error_type AS VARCHAR) FROM reject_errors "
                "WHERE scan_id > ? ORDER BY line", [before]).fetchall()
        except Exception:  # noqa: BLE001 - no reject table: nothing was rejected
            return []
        return [(int(line), str(kind)) for line, kind in rows]

    def _renumber(self, fno: int, rejected: list[int]) -> None:
        """Rows after a rejected line were numbered without it: the k-th line read is line
        k + (the rejected lines r_j, j counted from 0, with r_j - j <= k)."""
        con = self.con
        con.execute("CREATE OR REPLACE TEMP TABLE rej (r BIGINT, j BIGINT)")
        con.executemany("INSERT INTO rej VALUES (?, ?)",
                        [(r, j) for j, r in enumerate(sorted(rejected))])
        con.execute("UPDATE raw SET line = line + (SELECT count(*) FROM rej WHERE "
                    "rej.r - rej.j <= raw.line) WHERE fno = ?", [fno])

    def _resources(self) -> None:
        """Type, id, patient and referenced Medication of every line, and the problems.

        choice: the texts are never carried through a window or a sort: the small columns
        are worked on, the texts stay on disk and are read back per chunk of patients (each
        chunk sorted on its own), so DuckDB keeps within its memory limit however large the
        export is (measured: 100,000 patients within 128MB; the windows over every line's
        type and id are what grows with the export)."""
        con = self.con
        names = ", ".join(_sql_text(t) for t in READ_TYPES)
        patient_ref = r"'(?:^|/)Patient/([^/]+)(?:/_history/[^/]*)?$'"
        med_ref = r"'(?:^|/)Medication/([^/]+)(?:/_history/[^/]*)?$'"
        tests = [f"contains(lower(obj), {_sql_text(t)})" for t in screening_terms(self.kb)]
        tests += ["json_extract(obj, '$.medicationReference') IS NOT NULL",
                  "contains(obj, '\\u')"]
        con.execute(f"""
            CREATE TABLE meta AS
            WITH j AS (
                -- (a CASE does not keep DuckDB from evaluating both branches: the JSON
                -- functions only ever see valid JSON)
                SELECT fno, line, text, json_valid(text) AS ok,
                       CASE WHEN json_valid(text) THEN text ELSE 'null' END AS valid
                FROM raw
            ), o AS (
                SELECT fno, line, text, ok,
                       CASE WHEN json_type(valid) = 'OBJECT' THEN valid ELSE '{{}}' END AS obj
                FROM j
            ), t AS (
                SELECT fno, line, ok, obj,
                       json_extract_string(obj, '$.resourceType') AS rtype,
                       json_extract_string(obj, '$.id') AS rid, hash(text) AS h,
                       json_extract_string(obj, '$.resourceType') = 'MedicationRequest'
                         AND json_extract_string(obj, '$.status') = 'active'
                         AND ({' OR '.join(tests)}) AS maybe
                FROM o
            )
            SELECT fno, line, ok, rtype, rid, h, coalesce(maybe, false) AS maybe,
                   CASE WHEN rtype = 'Patient' THEN rid
                        WHEN rtype = 'Medication' OR rtype NOT IN ({names}) THEN NULL
                        ELSE nullif(regexp_extract(coalesce(
                            json_extract_string(obj, '$.subject.reference'),
                            json_extract_string(obj, '$.patient.reference'), ''),
                            {patient_ref}, 1), '') END AS pid,
                   CASE WHEN rtype IN ('MedicationRequest', 'MedicationStatement',
                                       'MedicationDispense')
                        THEN nullif(regexp_extract(coalesce(json_extract_string(
                            obj, '$.medicationReference.reference'), ''), {med_ref}, 1),
                            '') END AS medref
            FROM t""")  # noqa: S608 - constants and knowledge values, quoted
        for fno, line in con.execute(
                "SELECT fno, line FROM meta WHERE NOT ok ORDER BY fno, line").fetchall():
            self.problems.append(Problem(self._names[fno], int(line),
                                         "the line is not JSON; not read"))
        for fno, line in con.execute(
                "SELECT fno, line FROM meta WHERE ok AND rtype IS NULL "
                "ORDER BY fno, line").fetchall():
            self.problems.append(Problem(self._names[fno], int(line),
                                         "the line is not a FHIR resource (no resourceType); "
                                         "not read"))
        ignored = (f"SELECT rtype, count(*) FROM meta WHERE rtype NOT IN ({names}) "  # noqa: S608
                   "GROUP BY rtype ORDER BY rtype")
        for rtype, n in con.execute(ignored).fetchall():
            self.stats.ignored[str(rtype)] = int(n)
        con.execute(f"""
            CREATE TABLE res AS
            SELECT fno, line, rtype, rid, pid, medref, maybe,
                   rid IS NULL OR row_number() OVER (PARTITION BY rtype, rid
                                                     ORDER BY fno DESC, line DESC) = 1 AS used,
                   count(*) OVER (PARTITION BY rtype, rid) AS copies,
                   count(DISTINCT h) OVER (PARTITION BY rtype, rid) AS versions
            FROM meta WHERE rtype IN ({names})""")  # noqa: S608 - constants
        con.execute("DROP TABLE meta")
        for rtype, n in con.execute(
                "SELECT rtype, count(*) FROM res WHERE used GROUP BY rtype ORDER BY rtype"
                ).fetchall():
            self.stats.resources[str(rtype)] = int(n)
        for fno, line, rtype, rid, copies in con.execute(
                "SELECT fno, line, rtype, rid, copies FROM res WHERE rid IS NOT NULL AND "
                "used AND versions > 1 ORDER BY fno, line").fetchall():
            # the same resource written again (a Medication in every patient block) is not
            # worth a word; different versions of it are
            self.problems.append(Problem(
                self._names[fno], int(line),
                f"{rtype}/{rid} appears {copies} times in the export, not all the same: this "
                "occurrence (the last) is used", "information", "duplicate"))
        for fno, line, rtype, rid in con.execute(
                "SELECT fno, line, rtype, rid FROM res WHERE pid IS NULL AND rtype NOT IN "
                "('Patient', 'Medication') ORDER BY fno, line").fetchall():
            self.problems.append(Problem(
                self._names[fno], int(line),
                f"{rtype}/{rid or '(no id)'} names no patient (subject or patient is not a "
                "Patient reference); not used", "warning"))
        row = con.execute("SELECT count(DISTINCT rid) FROM res WHERE rtype = 'Patient'"
                          ).fetchone()
        self.stats.patients = int(row[0]) if row else 0

    def _select(self) -> None:
        """The patients to check (an active MedicationRequest that may be baclofen, see the
        module docstring), then their resources with their texts, sorted by patient."""
        con = self.con
        con.execute("""
            CREATE TABLE cand AS
            SELECT DISTINCT pid FROM res
            WHERE rtype = 'MedicationRequest' AND used AND pid IS NOT NULL
              AND (maybe OR medref IS NOT NULL)""")
        for pid, fno, line in con.execute("""
                SELECT c.pid, min(r.fno), min(r.line) FROM cand c JOIN res r USING (pid)
                WHERE NOT EXISTS (SELECT 1 FROM res p WHERE p.rtype = 'Patient'
                                  AND p.rid = c.pid)
                  AND r.rtype = 'MedicationRequest'
                GROUP BY c.pid ORDER BY c.pid""").fetchall():
            self.problems.append(Problem(
                self._names[fno], int(line),
                f"Patient/{pid} has active medication orders but no Patient resource in the "
                "export: that patient was not checked", "error", "not-found"))
        con.execute("DELETE FROM cand WHERE pid NOT IN (SELECT rid FROM res WHERE rtype = "
                    "'Patient' AND rid IS NOT NULL)")   # named above, not checked
        row = con.execute("SELECT count(*) FROM cand").fetchone()
        self.stats.candidates = int(row[0]) if row else 0
        con.execute("""
            CREATE TABLE mine AS
            SELECT r.pid, r.rtype, r.fno, r.line, r.medref, r.rtype <> 'Patient' AS later, x.text
            FROM res r JOIN cand c USING (pid) JOIN raw x USING (fno, line)
            WHERE r.used""")
        con.execute("""
            CREATE TABLE meds AS
            SELECT r.rid, r.fno, r.line, x.text FROM res r JOIN raw x USING (fno, line)
            WHERE r.rtype = 'Medication' AND r.used
              AND r.rid IN (SELECT medref FROM mine WHERE medref IS NOT NULL)""")
        con.execute("DROP TABLE raw")
        con.execute("DROP TABLE res")

    # --- handing out ------------------------------------------------------------------------

    def records(self, per_chunk: int = PATIENTS_PER_CHUNK) -> Iterator[Record]:
        """Each patient to check, in patient id order, with the Medications its resources
        reference; read in chunks of patients so that memory does not grow with the export.
        """
        con = self.con
        pids = [str(r[0]) for r in con.execute("SELECT pid FROM cand ORDER BY pid").fetchall()]
        for at in range(0, len(pids), per_chunk):
            low, high = pids[at], pids[min(at + per_chunk, len(pids)) - 1]
            rows = self._chunk(low, high)
            current: Record | None = None
            for pid, rtype, fno, line, text, _later in rows:
                if current is None or current.pid != pid:
                    if current is not None:
                        yield current
                    current = Record(str(pid), [])
                current.lines.append(Located(str(rtype), self._names[fno], int(line),
                                             str(text)))
            if current is not None:
                yield current

    def _chunk(self, low: str, high: str) -> list[Any]:
        import duckdb  # lazy: only a review loads DuckDB

        try:
            return self.con.execute("""
                WITH chunk AS (SELECT * FROM mine WHERE pid BETWEEN ? AND ?),
                used AS (SELECT DISTINCT pid, medref FROM chunk WHERE medref IS NOT NULL)
                SELECT pid, rtype, fno, line, text, later FROM chunk
                UNION ALL
                SELECT u.pid, 'Medication', m.fno, m.line, m.text, true
                FROM used u JOIN meds m ON m.rid = u.medref
                ORDER BY pid, later, fno, line""", [low, high]).fetchall()
        except duckdb.OutOfMemoryException as exc:
            raise self._out_of_memory(exc) from exc
