"""``baclofen-check review --engine spark``: the population review as an Apache Spark job.

The same review as the embedded engine (service/population/review.py), for exports that live
beyond one machine (HDFS, object stores, a shared file system) and clusters that run Spark:

1. The export's files are listed through Spark's own file system layer (any path or URI the
   cluster reads: ``/data/export``, ``file:/...``, ``hdfs://...``, ``s3a://...``) and chosen
   by name exactly as the embedded engine chooses them (``export.file_kind``).
2. Spark reads them line by line (plain or gzip, per type or ``organizeOutputBy=Patient``
   blocks); each line keeps its file and line number (the splits of a file are numbered
   from their line counts), so that what cannot be read is named with its file and line as
   the embedded engine names it.
3. Each line is read on the executors by the same rules as the embedded engine's SQL (not
   UTF-8, too long, not JSON, no resourceType, types the rules do not read; the patient of
   ``subject`` or ``patient``; the ``medicationReference``; the screening of active
   MedicationRequests by the knowledge's baclofen terms); resources written more than once
   are read once (the last occurrence); every resource is grouped by its patient with the
   Medications its resources reference.
4. Each patient's record is checked on the executors by ``check.check_record`` (the native
   Bundle path in review mode; the same function as the embedded engine's workers), and the
   results come back to the driver in patient id order, one partition at a time.
5. The driver writes the same outputs as the embedded engine: ``DetectedIssue.ndjson``,
   ``OperationOutcome.ndjson``, ``orders-checked.txt``, ``summary.json`` and ``report.html``
   (the same tally, summary and report code).

Executors need this package installed, the same version, with its knowledge (checked before
the review starts: a mismatch stops the review). In local mode (``local[*]``, the default)
the Python workers run the interpreter that runs the command, whether or not its virtualenv
is activated. A file Spark cannot read (a truncated gzip) stops the review with Spark's
error instead of being left out.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import unquote

from ..knowledge import Knowledge, load
from .check import PatientResult
from .export import (
    MEDICATION_USERS,
    READ_TYPES,
    LoadStats,
    Located,
    Problem,
    Record,
    file_kind,
    screening_terms,
)
from .review import Options, Tally, _check_window, finish, write_outputs

PATIENTS_PER_PARTITION = 2000
CHECK_WINDOW = 64
_PATIENT_REF = re.compile(r"(?:^|/)Patient/([^/]+)(?:/_history/[^/]*)?$")
_MED_REF = re.compile(r"(?:^|/)Medication/([^/]+)(?:/_history/[^/]*)?$")

# what one line of the export is (the ``kind`` column)
REJECTED, NOT_JSON, NOT_RESOURCE, IGNORED, RESOURCE = range(5)


class SparkReviewError(Exception):
    """The Spark review could not run; the message says why."""


# --- the Spark session ------------------------------------------------------------------------

def _package_version() -> str:
    try:
        return version("baclofen-check")
    except PackageNotFoundError:
        return "unknown"


def session(master: str | None) -> tuple[Any, bool]:
    """The Spark session to run on, and whether this run made it (and so stops it).

    An active session (a notebook's, a test's) is used as it is. Otherwise: ``master`` when
    given; under ``spark-submit`` the master it was given; else ``local[*]``. In local mode
    the Python workers run this interpreter (``sys.executable``)."""
    try:
        from pyspark.sql import SparkSession  # lazy: pyspark is optional and heavy
    except ImportError as exc:
        raise SparkReviewError(
            "the spark engine needs PySpark and Java 17: pip install 'baclofen-check[spark]'"
        ) from exc
    active = SparkSession.getActiveSession()
    if active is not None:
        return active, False
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ   # started by spark-submit
    if master is None and not submitted:
        master = "local[*]"
    if master is not None and master.startswith("local"):
        os.environ["PYSPARK_PYTHON"] = sys.executable
        os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    builder = SparkSession.builder.appName("baclofen-check review")
    builder = builder.config("spark.ui.showConsoleProgress", "false")
    if master is not None:
        builder = builder.master(master)
        if master.startswith("local"):
            # one machine: no web UI, and as many shuffle partitions as it has cores twice
            # (not a cluster's 200 files per task)
            m = re.fullmatch(r"local\[(\d+)(?:,\d+)?\]", master)
            cores = int(m.group(1)) if m else (os.cpu_count() or 1)
            builder = builder.config("spark.ui.enabled", "false").config(
                "spark.sql.shuffle.partitions", str(2 * cores))
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # noqa: BLE001 - no Java, a master that does not answer ...
        raise SparkReviewError(f"Spark could not start ({type(exc).__name__}: "
                               f"{_first_line(exc)}); the spark engine needs Java 17") from exc
    spark.sparkContext.setLogLevel("ERROR")
    return spark, True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _identity(_index: int) -> tuple[str, str, str]:
    """Run on an executor: the package, knowledge and Python versions it checks with (and the
    knowledge loaded for the tasks that follow)."""
    return _package_version(), load().version, ".".join(map(str, sys.version_info[:2]))


def check_executors(spark: Any, kb: Knowledge) -> None:
    """The executors must check with the same code and knowledge as this command."""
    sc = spark.sparkContext
    n = max(1, int(sc.defaultParallelism))
    seen = set(sc.parallelize(range(n), n).map(_identity).collect())
    mine = _identity(0)
    others = sorted(seen - {mine})
    if others:
        got = "; ".join(f"baclofen-check {v}, knowledge {k}, Python {p}" for v, k, p in others)
        raise SparkReviewError(
            f"the executors run {got}; this command runs baclofen-check {mine[0]}, knowledge "
            f"{mine[1]}, Python {mine[2]}: install the same version on every executor")


# --- the export's files -----------------------------------------------------------------------

def list_export(spark: Any, location: str) -> tuple[list[tuple[str, str, str | None]], list[str]]:
    """(name, URI, type) of each file to read, sorted by name, and the names left unopened:
    through Spark's file system layer, so any location the cluster reads."""
    sc = spark.sparkContext
    jvm = sc._jvm
    path = jvm.org.apache.hadoop.fs.Path(location)
    try:
        fs = path.getFileSystem(sc._jsc.hadoopConfiguration())
        statuses = fs.listStatus(path)
    except Exception as exc:  # noqa: BLE001 - not there, no access, no such file system
        raise SparkReviewError(f"{location} cannot be listed: {_first_line(exc)}") from exc
    entries = sorted((st.getPath().getName(), st.getPath().toString())
                     for st in statuses if st.isFile())
    files: list[tuple[str, str, str | None]] = []
    skipped: list[str] = []
    for name, uri in entries:
        read, kind = file_kind(name)
        if read:
            files.append((name, uri, kind))
        elif name != "manifest.json":
            skipped.append(name)
    return files, skipped


def _line_offsets(raw: Any, names: list[str]) -> dict[tuple[str, int], tuple[int, int]]:
    """(file name, split start) -> (file number, what turns the row id into the line number):
    the rows of a split are consecutive ids in its partition, the splits of a file follow
    each other."""
    from pyspark.sql import functions as F  # lazy: pyspark is optional and heavy

    rows = raw.groupBy("name", "block").agg(F.min("mono").alias("first"),
                                            F.count("*").alias("n")).collect()
    number = {name: n for n, name in enumerate(names)}

    def fno(name: str) -> int:   # (a name as Spark gives it: URL-encoded in some versions)
        return number[name] if name in number else number[unquote(name)]

    offsets: dict[tuple[str, int], tuple[int, int]] = {}
    before: dict[str, int] = {}
    for row in sorted(rows, key=lambda r: (fno(r["name"]), r["block"])):
        name = row["name"]
        done = before.get(name, 0)
        offsets[(name, int(row["block"]))] = (fno(name), done - int(row["first"]) + 1)
        before[name] = done + int(row["n"])
    return offsets


# --- each line, on the executors (the rules of export.py's SQL) --------------------------------

def _text(value: Any) -> str | None:
    """A JSON value as ``json_extract_string`` gives it."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, separators=(",", ":"))


def _at(obj: Any, *keys: str) -> str | None:
    for key in keys:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return _text(obj)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def read_line(data: bytes, max_line_bytes: int, terms: list[str]) -> tuple[Any, ...] | None:
    """One line of the export -> (kind, rtype, rid, pid, medref, text, screened), or None for
    a blank line. ``kind`` REJECTED carries the reason in ``rtype``."""
    if len(data) > max(1024, int(max_line_bytes)):
        return (REJECTED, "size", None, None, None, None, False)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return (REJECTED, "encoding", None, None, None, None, False)
    if not text.strip(" "):
        return None
    try:
        obj = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return (NOT_JSON, None, None, None, None, None, False)
    rtype = _at(obj, "resourceType")
    if rtype is None:
        return (NOT_RESOURCE, None, None, None, None, None, False)
    if rtype not in READ_TYPES:
        return (IGNORED, rtype, None, None, None, None, False)
    rid = _at(obj, "id")
    pid: str | None = None
    if rtype == "Patient":
        pid = rid
    elif rtype != "Medication":
        ref = _at(obj, "subject", "reference")
        if ref is None:
            ref = _at(obj, "patient", "reference")
        m = _PATIENT_REF.search(ref or "")
        pid = m.group(1) if m else None
    medref = None
    if rtype in MEDICATION_USERS:
        m = _MED_REF.search(_at(obj, "medicationReference", "reference") or "")
        medref = m.group(1) if m else None
    screened = False
    if rtype == "MedicationRequest":
        # an active order holding a baclofen term, a medicationReference or a \\u escape; or
        # any order whose medicationReference names a Medication (export.py's screening)
        low = text.lower()
        screened = medref is not None or (_at(obj, "status") == "active" and (
            "medicationReference" in obj or "\\u" in text or any(t in low for t in terms)))
    return (RESOURCE, rtype, rid, pid, medref, text, screened)


def _read_partition(rows: Iterable[Any], offsets: dict[tuple[str, int], tuple[int, int]],
                    max_line_bytes: int, terms: list[str]) -> Iterator[tuple[Any, ...]]:
    for name, block, mono, data in rows:
        fno, shift = offsets[(name, int(block))]
        read = read_line(bytes(data), max_line_bytes, terms)
        if read is not None:
            yield (read[0], fno, int(mono) + shift, *read[1:])


_LINE_SCHEMA = ("kind INT, fno INT, line BIGINT, rtype STRING, rid STRING, pid STRING, "
                "medref STRING, text STRING, screened BOOLEAN")


# --- each patient, on the executors -----------------------------------------------------------

def _check_partition(rows: Iterable[Any], names: list[str], check_time: datetime,
                     profile: str) -> Iterator[PatientResult]:
    # an executor is a process of its own (not forked from review()): it reads its own copy of
    # the knowledge, whose version the driver checked is its own (_identity)
    kb = load()
    window: list[Record] = []
    for row in rows:
        lines = sorted(row["lines"], key=lambda r: (r["later"], r["fno"], r["line"]))
        window.append(Record(row["pid"], [Located(r["rtype"], names[r["fno"]], int(r["line"]),
                                                  r["text"]) for r in lines]))
        if len(window) == CHECK_WINDOW:
            yield from _check_window(window, check_time, profile, kb)
            window = []
    if window:
        yield from _check_window(window, check_time, profile, kb)


# --- the whole review -------------------------------------------------------------------------

class _Grouped:
    """The export read and grouped by Spark: the problems, the figures and the records."""

    def __init__(self, spark: Any, location: str, kb: Knowledge, max_line_bytes: int) -> None:
        self.spark = spark
        self.location = location
        self.kb = kb
        self.max_line_bytes = max_line_bytes
        self.stats = LoadStats()
        self.problems: list[Problem] = []
        self.names: list[str] = []
        self._cached: list[Any] = []

    def unpersist(self) -> None:
        for df in self._cached:
            df.unpersist()

    def load(self) -> Any:
        """Read, check the lines, de-duplicate and select: the records to check (a DataFrame
        of ``pid, lines``)."""
        from pyspark import StorageLevel  # lazy: pyspark is optional and heavy
        from pyspark.sql import functions as F  # lazy: pyspark is optional and heavy

        spark = self.spark
        files, skipped = list_export(spark, self.location)
        self.stats.skipped_files = skipped
        self.names = [name for name, _uri, _kind in files]
        if not files:
            return None
        raw = spark.read.text([uri for _name, uri, _kind in files]).select(
            F.col("_metadata.file_name").alias("name"),
            F.col("_metadata.file_block_start").alias("block"),
            F.monotonically_increasing_id().alias("mono"),
            F.col("value").cast("binary").alias("data"))
        offsets = _line_offsets(raw, self.names)
        terms = screening_terms(self.kb)
        limit = self.max_line_bytes
        lines_rdd = raw.rdd.mapPartitions(
            lambda rows: _read_partition(rows, offsets, limit, terms))
        # (the rows are made to the schema by read_line: not verified again row by row)
        lines = spark.createDataFrame(lines_rdd, _LINE_SCHEMA, verifySchema=False).persist(
            StorageLevel.MEMORY_AND_DISK)
        self._cached.append(lines)
        self._line_problems(lines)

        res = lines.filter(F.col("kind") == RESOURCE).drop("kind")
        copies = res.filter(F.col("rid").isNotNull()).groupBy("rtype", "rid").agg(
            F.max(F.struct("fno", "line")).alias("last"), F.count("*").alias("copies"),
            F.countDistinct(F.sha2("text", 256)).alias("versions"))
        res = res.join(copies, ["rtype", "rid"], "left").withColumn(
            "keep", F.col("rid").isNull() | ((F.col("last.fno") == F.col("fno"))
                                              & (F.col("last.line") == F.col("line"))))
        res = res.persist(StorageLevel.MEMORY_AND_DISK)
        self._cached.append(res)
        self._resource_problems(res)
        return self._select(res)

    def _line_problems(self, lines: Any) -> None:
        """The lines read per file, the types left, and the lines not read (one job)."""
        from pyspark.sql import functions as F  # lazy: pyspark is optional and heavy

        counts = lines.filter(F.col("kind") != REJECTED).groupBy("fno", "kind", "rtype") \
            .agg(F.count("*").alias("line")).select(F.lit(True).alias("count"), "kind", "fno",
                                                     "line", "rtype")
        found = lines.filter(F.col("kind").isin(REJECTED, NOT_JSON, NOT_RESOURCE)).select(
            F.lit(False).alias("count"), "kind", "fno", "line", "rtype")
        rows = counts.unionByName(found).collect()
        per_file: dict[int, int] = {}
        for row in (r for r in rows if r["count"]):
            per_file[row["fno"]] = per_file.get(row["fno"], 0) + int(row["line"])
            if row["kind"] == IGNORED:
                self.stats.ignored[row["rtype"]] = (self.stats.ignored.get(row["rtype"], 0)
                                                    + int(row["line"]))
        self.stats.ignored = dict(sorted(self.stats.ignored.items()))
        for fno, name in enumerate(self.names):
            _read, kind = file_kind(name)
            self.stats.files.append({"name": name, "type": kind,
                                     "lines": per_file.get(fno, 0)})
            self.stats.lines += per_file.get(fno, 0)
        for row in sorted((r for r in rows if not r["count"]),
                          key=lambda r: (r["kind"], r["fno"], r["line"])):
            name, line = self.names[row["fno"]], int(row["line"])
            if row["kind"] == REJECTED:
                why = ("is not UTF-8 text" if row["rtype"] == "encoding" else
                       f"is longer than {self.max_line_bytes} bytes (MAX_REQUEST_BYTES)")
                self.problems.append(Problem(name, line, f"the line {why}; not read",
                                             code="too-costly" if row["rtype"] == "size"
                                             else "invalid"))
            elif row["kind"] == NOT_JSON:
                self.problems.append(Problem(name, line, "the line is not JSON; not read"))
            else:
                self.problems.append(Problem(name, line, "the line is not a FHIR resource (no "
                                             "resourceType); not read"))

    def _resource_problems(self, res: Any) -> None:
        """Resources read by type, patients, the resources written in different versions and
        those that name no patient (one job)."""
        from pyspark.sql import functions as F  # lazy: pyspark is optional and heavy

        counts = res.filter("keep").groupBy("rtype", F.col("rid").isNull().alias("noid")) \
            .agg(F.count("*").alias("n")).select(
                F.lit("count").alias("what"), "rtype", F.lit(None).cast("string").alias("rid"),
                F.lit(None).cast("int").alias("fno"), F.lit(None).cast("bigint").alias("line"),
                "n", "noid")
        versions = res.filter(F.col("rid").isNotNull() & F.col("keep")
                              & (F.col("versions") > 1)).select(
            F.lit("versions").alias("what"), "rtype", "rid", "fno", "line",
            F.col("copies").alias("n"), F.lit(False).alias("noid"))
        nobody = res.filter(F.col("pid").isNull()
                            & ~F.col("rtype").isin("Patient", "Medication")).select(
            F.lit("nobody").alias("what"), "rtype", "rid", "fno", "line",
            F.lit(0).cast("bigint").alias("n"), F.lit(False).alias("noid"))
        rows = counts.unionByName(versions).unionByName(nobody).collect()
        for row in (r for r in rows if r["what"] == "count"):
            rtype = row["rtype"]
            self.stats.resources[rtype] = self.stats.resources.get(rtype, 0) + int(row["n"])
            if rtype == "Patient" and not row["noid"]:
                self.stats.patients = int(row["n"])   # one kept row per Patient id
        self.stats.resources = dict(sorted(self.stats.resources.items()))
        for row in sorted((r for r in rows if r["what"] == "versions"),
                          key=lambda r: (r["fno"], r["line"])):
            self.problems.append(Problem(
                self.names[row["fno"]], int(row["line"]),
                f"{row['rtype']}/{row['rid']} appears {row['n']} times in the export, not "
                "all the same: this occurrence (the last) is used", "information", "duplicate"))
        for row in sorted((r for r in rows if r["what"] == "nobody"),
                          key=lambda r: (r["fno"], r["line"])):
            self.problems.append(Problem(
                self.names[row["fno"]], int(row["line"]),
                f"{row['rtype']}/{row['rid'] or '(no id)'} names no patient (subject or patient "
                "is not a Patient reference); not used", "warning"))

    def _select(self, res: Any) -> Any:
        """The records of the patients to check (``stats.candidates`` is counted by the check:
        one result per record)."""
        from pyspark.sql import functions as F  # lazy: pyspark is optional and heavy

        patients = res.filter((F.col("rtype") == "Patient") & F.col("rid").isNotNull()) \
            .select(F.col("rid").alias("pid")).distinct()
        orders = res.filter(F.col("rtype") == "MedicationRequest")
        screened = orders.filter(F.col("keep") & F.col("pid").isNotNull() & F.col("screened")) \
            .select("pid").distinct()
        orphans = screened.join(patients, "pid", "left_anti").join(orders, "pid") \
            .groupBy("pid").agg(F.min("fno").alias("fno"), F.min("line").alias("line"))
        for row in sorted(orphans.collect(), key=lambda r: r["pid"]):
            self.problems.append(Problem(
                self.names[row["fno"]], int(row["line"]),
                f"Patient/{row['pid']} has active medication orders but no Patient resource in "
                "the export: that patient was not checked", "error", "not-found"))
        cand = screened.join(patients, "pid", "left_semi")
        mine = res.filter(F.col("keep") & F.col("pid").isNotNull()).join(cand, "pid",
                                                                          "left_semi")
        meds = mine.filter(F.col("medref").isNotNull()).select("pid", "medref").distinct() \
            .join(res.filter((F.col("rtype") == "Medication") & F.col("keep")
                             & F.col("rid").isNotNull())
                  .select(F.col("rid").alias("medref"), "fno", "line", "rtype", "text"),
                  "medref")
        rows = mine.select("pid", (F.col("rtype") != "Patient").alias("later"), "fno", "line",
                           "rtype", "text").unionByName(
            meds.select("pid", F.lit(True).alias("later"), "fno", "line", "rtype", "text"))
        return rows.groupBy("pid").agg(F.collect_list(
            F.struct("later", "fno", "line", "rtype", "text")).alias("lines"))


def spark_review(options: Options, kb: Knowledge, location: str,
                 master: str | None = None) -> dict[str, Any]:
    """Run the review on Spark; returns the summary (also written to summary.json).
    ``location`` is the export as Spark reads it (a path or a URI)."""
    started = time.perf_counter()
    spark, own = session(master)
    try:
        return _run(spark, options, kb, location, started)
    except SparkReviewError:
        raise
    except Exception as exc:
        if type(exc).__name__ in ("Py4JJavaError", "PySparkException") or \
                type(exc).__module__.startswith(("py4j", "pyspark")):
            raise SparkReviewError(f"the Spark job failed: {_first_line(exc)}") from exc
        raise
    finally:
        if own:
            spark.stop()


def _run(spark: Any, options: Options, kb: Knowledge, location: str, started: float
         ) -> dict[str, Any]:
    from pyspark import StorageLevel  # lazy: pyspark is optional and heavy

    check_executors(spark, kb)
    sc = spark.sparkContext
    options.jobs = int(sc.defaultParallelism)
    out = options.out_dir
    out.mkdir(parents=True, exist_ok=True)
    grouped_export = _Grouped(spark, location, kb, options.max_line_bytes)
    try:
        records = grouped_export.load()
        grouped = time.perf_counter()
        results = None
        total = 0
        if records is not None:
            # (the patients read bound the patients to check)
            parts = max(2 * options.jobs,
                        -(-grouped_export.stats.patients // PATIENTS_PER_PARTITION))
            names = grouped_export.names
            check_time, profile = options.check_time, options.profile
            results = records.repartitionByRange(parts, "pid").sortWithinPartitions("pid") \
                .rdd.mapPartitions(lambda rows: _check_partition(rows, names, check_time,
                                                                 profile)) \
                .persist(StorageLevel.DISK_ONLY)
            total = results.count()     # every patient checked, in parallel
        grouped_export.stats.candidates = total
        tally = Tally()
        with write_outputs(out, grouped_export.problems, tally, options, total) as emit:
            for result in results.toLocalIterator() if results is not None else ():
                emit(result)
        if results is not None:
            results.unpersist()
    finally:
        grouped_export.unpersist()
    return finish(options, kb, tally, grouped_export.stats, grouped_export.problems, started,
                  grouped)
