"""The spool: where an answered check's record waits while the store cannot take it.

- A record the store cannot take (down, no answer within DB_STATEMENT_TIMEOUT_S, disk full)
  is appended to this process's spool file under SPOOL_DIR and flushed to disk (fdatasync)
  before the answer is sent. Once the store takes writes again new records go to it, and the
  spooled ones follow, in the order they were spooled.
- A file is a row of frames ``[length, crc32, zlib(JSON of the CheckRecord)]``, append-only.
  A torn last frame (a process killed while writing it, before answering) ends the file.
- Files are named ``{db}-{host}-{pid}-{random}.spool``, ``db`` a digest of DATABASE_URL, so
  that a record is replayed only into the store it was meant for. The process writing a file
  holds a lock (flock) on it: a file nobody holds belongs to a dead process.
- Replay: in order and idempotently (by the record's own id, ``Store.replay_checks``), by a
  thread of the process as soon as the store takes writes again; files of dead processes by
  the next process that starts, and all of them by ``baclofen-check spool replay``.
- A full disk: each process reserves RESERVE_BYTES of disk blocks at start (a file with blocks
  allocated past its end) and its first spool file takes them over, so that records can still
  be spooled when the store fails because the disk is full.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import json
import logging
import os
import socket
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import g, has_app_context
from sqlalchemy.exc import SQLAlchemyError

from . import metrics

if TYPE_CHECKING:
    from .store import CheckRecord, Store

log = logging.getLogger("baclofen_check.spool")
RESERVE_BYTES = 4 * 1024 * 1024
RETRY_S = 1.0
REPLAY_BATCH = 50  # records a transaction (well within DB_STATEMENT_TIMEOUT_S)
_FRAME = struct.Struct(">II")
_MAX_FRAME = 64 * 1024 * 1024
_FALLOC_FL_KEEP_SIZE = 1


# --- records as bytes -------------------------------------------------------------------------

def encode(record: CheckRecord) -> bytes:
    data = {
        "record_id": record.record_id, "time": record.time.isoformat(),
        "caller": record.caller, "endpoint": record.endpoint, "hook": record.hook,
        "hook_instance": record.hook_instance, "patient_ref": record.patient_ref,
        "order_refs": list(record.order_refs), "knowledge_version": record.knowledge_version,
        "latency_ms": record.latency_ms,
        "findings": [[f.rule_id, f.severity, f.finding_id, f.card_uuid, f.detected_issue]
                     for f in record.findings],
    }
    payload = zlib.compress(json.dumps(data, separators=(",", ":")).encode(), 1)
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def decode(payload: bytes) -> CheckRecord:
    from .store import CheckRecord, FindingRecord  # cycle: store.py imports this module

    data = json.loads(zlib.decompress(payload))
    return CheckRecord(
        time=datetime.fromisoformat(data["time"]), caller=data["caller"],
        endpoint=data["endpoint"], hook=data["hook"], hook_instance=data["hook_instance"],
        patient_ref=data["patient_ref"], order_refs=data["order_refs"],
        knowledge_version=data["knowledge_version"], latency_ms=data["latency_ms"],
        findings=[FindingRecord(*f) for f in data["findings"]], record_id=data["record_id"])


def read_frames(path: Path, start: int = 0, end: int | None = None
                ) -> Iterator[tuple[int, CheckRecord]]:
    """(offset after the frame, record) for each whole frame from ``start``; stops at a torn
    or damaged frame, which only the last write of a killed process can leave."""
    with open(path, "rb") as stream:
        stream.seek(start)
        offset = start
        while end is None or offset < end:
            head = stream.read(_FRAME.size)
            if len(head) < _FRAME.size:
                return
            length, crc = _FRAME.unpack(head)
            payload = stream.read(length) if 0 < length <= _MAX_FRAME else b""
            if len(payload) != length or not length or zlib.crc32(payload) != crc:
                log.warning("spool file ends with a torn record",
                            extra={"event": "spool-torn"})
                return
            offset += _FRAME.size + length
            yield offset, decode(payload)


# --- files --------------------------------------------------------------------------------------

def _allocate(fd: int, length: int) -> bool:
    """Allocate disk blocks past the end of the file (its size stays)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.fallocate(fd, _FALLOC_FL_KEEP_SIZE, ctypes.c_long(0),
                                  ctypes.c_long(length))) == 0
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return False


def _locked(fd: int) -> bool:
    """Take the file's lock without waiting; False when a live process holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _create(path: Path) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


class _Reserve:
    """This process's reserved disk blocks in one spool directory (see the module doc)."""

    _all: dict[tuple[int, str], _Reserve | None] = {}
    _lock = threading.Lock()

    def __init__(self, directory: Path) -> None:
        self.path = directory / f".reserve-{socket.gethostname()}-{os.getpid()}"
        self.fd = _create(self.path)
        self.allocated = _allocate(self.fd, RESERVE_BYTES)

    @classmethod
    def make(cls, directory: Path) -> None:
        """Reserve for this process, once per directory (a failure only costs the reserve)."""
        key = (os.getpid(), str(directory))
        with cls._lock:
            if cls._all.get(key) is None:
                try:
                    cls._all[key] = cls(directory)
                except OSError as exc:
                    log.warning("no spool reserve", extra={"event": "spool-no-reserve",
                                                           "error_type": type(exc).__name__})

    @classmethod
    def take(cls, directory: Path) -> _Reserve | None:
        with cls._lock:
            return cls._all.pop((os.getpid(), str(directory)), None)


@dataclass
class ReplayResult:
    replayed: int = 0        # records written to the store now
    already: int = 0         # records the store held already (by record id)
    files: int = 0           # files replayed to their end and removed
    busy_files: int = 0      # files held by running processes (each replays its own)
    waiting: bool = False    # records left because the store did not take them


class Spool:
    """The spool files of one store (DATABASE_URL) in one directory, for this process."""

    def __init__(self, directory: str | Path, max_bytes: int, database_url: str) -> None:
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        self.db = hashlib.sha256(database_url.encode()).hexdigest()[:12]
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        self._pid = 0
        self._size = 0         # bytes written to this process's file
        self._replayed = 0     # bytes of it already in the store
        self._thread: threading.Thread | None = None

    def open(self) -> Spool:
        """Make the directory (owner only) and this process's reserve. Returns self."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            log.error("the spool directory cannot be made", extra={
                "event": "spool-unavailable", "error_type": type(exc).__name__})
            return self
        _Reserve.make(self.dir)
        self._remove_dead_reserves()
        return self

    @property
    def pending(self) -> bool:
        """Records of this process wait in the spool."""
        return self._size > self._replayed and self._pid == os.getpid()

    def append(self, record: CheckRecord) -> bool:
        """Append one record and flush it to disk; False when it could not be."""
        frame = encode(record)
        with self._lock:
            try:
                if self._fd is None or self._pid != os.getpid():
                    self._new_file()
                assert self._fd is not None
                if os.write(self._fd, frame) != len(frame):
                    raise OSError(errno.ENOSPC, "short write")
                os.fdatasync(self._fd)
            except OSError as exc:
                if self._fd is not None and self._pid == os.getpid():
                    try:  # leave no partial frame for the next record to follow
                        os.ftruncate(self._fd, self._size)
                    except OSError:
                        pass
                log.error("the spool cannot be written", extra={
                    "event": "spool-failed", "error_type": type(exc).__name__})
                return False
            self._size += len(frame)
        return True

    def _new_file(self) -> None:
        path = self.dir / f"{self.db}-{socket.gethostname()}-{os.getpid()}-" \
                          f"{uuid.uuid4().hex[:8]}.spool"
        reserve = _Reserve.take(self.dir)
        if reserve is not None:
            os.rename(reserve.path, path)
            fd = reserve.fd
        else:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = _create(path)
            _allocate(fd, RESERVE_BYTES)
        self._fd, self._path, self._pid, self._size, self._replayed = \
            fd, path, os.getpid(), 0, 0

    def used_bytes(self) -> int:
        """Bytes waiting in every spool file of the directory (all stores, all processes)."""
        try:
            return sum(entry.stat().st_size for entry in os.scandir(self.dir)
                       if entry.name.endswith(".spool"))
        except OSError:
            return 0

    def files(self) -> list[Path]:
        """This store's spool files, oldest first."""
        try:
            found = list(self.dir.glob(f"{self.db}-*.spool"))
        except OSError:
            return []
        return sorted(found, key=lambda p: p.stat().st_mtime if p.exists() else 0)

    # --- replay -------------------------------------------------------------------------------

    def replay(self, store: Store) -> ReplayResult:
        """Replay the files of dead processes, then this process's own, in order."""
        result = ReplayResult()
        for path in self.files():
            if path == self._path:
                continue
            if not self._replay_foreign(store, path, result):
                result.waiting = True
                return result
        self._remove_dead_reserves()
        if not self._replay_own(store, result):
            result.waiting = True
        return result

    def _replay_file(self, store: Store, path: Path, start: int, end: int | None,
                     result: ReplayResult) -> int | None:
        """Replay frames of a file from ``start``, REPLAY_BATCH records a transaction; the
        offset reached, None on a failure."""
        offset = start
        batch: list[CheckRecord] = []
        try:
            for offset_after, record in read_frames(path, start, end):
                batch.append(record)
                if len(batch) == REPLAY_BATCH:
                    offset = self._replay_batch(store, path, batch, offset_after, result)
                    batch = []
                else:
                    pending_end = offset_after
            if batch:
                offset = self._replay_batch(store, path, batch, pending_end, result)
        except SQLAlchemyError:
            return None
        return offset

    def _replay_batch(self, store: Store, path: Path, batch: list[CheckRecord], end: int,
                      result: ReplayResult) -> int:
        done, already = store.replay_checks(batch)
        result.replayed += done
        result.already += already
        _count_replayed(done)
        if path == self._path:
            self._replayed = end
        return end

    def _replay_foreign(self, store: Store, path: Path, result: ReplayResult) -> bool:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return True  # replayed by another process meanwhile
        try:
            if not _locked(fd):
                result.busy_files += 1
                return True
            if not path.exists():
                return True
            if self._replay_file(store, path, 0, None, result) is None:
                return False
            path.unlink(missing_ok=True)
            result.files += 1
            log.info("spool file replayed", extra={"event": "spool-replayed"})
            return True
        finally:
            os.close(fd)

    def _replay_own(self, store: Store, result: ReplayResult) -> bool:
        while self.pending and self._path is not None:
            if self._replay_file(store, self._path, self._replayed, self._size,
                                 result) is None:
                return False
            with self._lock:
                if self._replayed >= self._size and self._fd is not None:
                    os.close(self._fd)
                    if self._path is not None:
                        self._path.unlink(missing_ok=True)
                    self._fd, self._path, self._size, self._replayed = None, None, 0, 0
                    result.files += 1
                    _Reserve.make(self.dir)  # room again for the next time
        return True

    def _remove_dead_reserves(self) -> None:
        for path in self.dir.glob(".reserve-*"):
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                if _locked(fd):
                    path.unlink(missing_ok=True)
            finally:
                os.close(fd)

    def replay_soon(self, store: Store) -> None:
        """Replay on a thread of this process until nothing of this store waits."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(target=self._replay_until_done, args=(store,),
                                            name="spool-replay", daemon=True)
            self._thread.start()

    def _replay_until_done(self, store: Store) -> None:
        while True:
            try:
                result = self.replay(store)
            except Exception as exc:  # noqa: BLE001 - the thread must go on trying
                log.error("spool replay failed", extra={"event": "spool-replay-failed",
                                                        "error_type": type(exc).__name__})
                result = ReplayResult(waiting=True)
            if result.replayed:
                log.info("spooled records replayed", extra={"event": "spool-replayed"})
            if not result.waiting:
                with self._lock:
                    if not self.pending:
                        self._thread = None
                        return
                continue
            time.sleep(RETRY_S)


def _count_replayed(n: int) -> None:
    metrics.AUDIT_REPLAYED.inc(n)


def record_durably(store: Store, record: CheckRecord) -> bool:
    """The store, or when it cannot take the record, the spool (see store.record_answered)."""
    spool = store.spool
    try:  # while the store is failing this fails at once (store._Guard)
        store.record_check(record)
        return True
    except SQLAlchemyError as exc:
        error = type(exc).__name__
    if spool is not None and spool.append(record):
        metrics.AUDIT_FAILURES.labels("spooled").inc()
        spool.replay_soon(store)
        return True
    metrics.AUDIT_FAILURES.labels("lost").inc()
    extra: dict[str, Any] = {
        "event": "audit-lost", "error_type": error, "record_id": record.record_id,
        "hook_instance": record.hook_instance, "patient_ref": record.patient_ref,
        "order_refs": list(record.order_refs),
    }
    if has_app_context() and g.get("request_id"):
        extra["request_id"] = g.request_id
    log.error("audit record lost: neither the store nor the spool took it", extra=extra)
    return False


def replay_cmd(settings: Any, out: Any) -> int:
    """``baclofen-check spool replay``: the spool files no running process holds, into the
    store at DATABASE_URL. 1 when the store did not take every record."""
    from .store import Store  # cycle: store.py imports this module

    store = Store(settings.database_url, settings.audit_retention_days,
                  settings.db_connect_timeout_s, settings.db_statement_timeout_s)
    try:
        store.migrate()
        result = Spool(settings.spool_dir, settings.spool_max_bytes,
                       settings.database_url).replay(store)
    finally:
        store.close()
    out.write(f"replayed {result.replayed} records ({result.already} recorded before) from "
              f"{result.files} files; {result.busy_files} files held by running processes\n")
    if result.waiting:
        out.write("the store did not take every record: run this again when it does\n")
        return 1
    return 0
