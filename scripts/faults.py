"""Fault test (`make faults`, not part of `make test`): each fault of issue 17 reproduced on
loopback against `baclofen-check serve` as it starts by default, with real PostgreSQL and
SQLite stores. Per fault it prints: calls answered, errors by kind, checks recorded, records
spooled and replayed, records lost (answered but never recorded: the target is 0), p50/p99 of
normal calls during the fault, and the time to recover.

Faults: PostgreSQL stopped; PostgreSQL frozen (SIGSTOP); disk full under SQLite (a small
tmpfs; needs root); 64 slow clients sending a byte a second (served directly, and behind nginx
with deploy/nginx.conf when nginx is installed); 20 MB of blank NDJSON lines; the gunicorn
master killed with SIGKILL under load and restarted at once.

    python scripts/faults.py [--only NAME ...] [--fault-seconds 10] [--clients 8]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
BODY = (ROOT / "fixtures" / "params-overdose.json").read_bytes()
CHECK = "/MedicationRequest/$check"
JSON_HEADERS = {"Content-Type": "application/fhir+json"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], bool], seconds: float) -> float | None:
    """Seconds until ``check()`` held, None if it never did."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        with suppress(Exception):
            if check():
                return time.monotonic() - started
        time.sleep(0.1)
    return None


# --- PostgreSQL -------------------------------------------------------------------------------

def pg_bin(name: str) -> str:
    found = shutil.which(name) or (sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or
                                   [None])[-1]
    if not found:
        raise SystemExit(f"faults: PostgreSQL's {name} is missing (apt-get install postgresql)")
    return found


class Postgres:
    def __init__(self, base: Path) -> None:
        self.data, self.port = base / "pg", free_port()
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            base.mkdir(exist_ok=True)
            os.chown(base, user.pw_uid, user.pw_gid)
            self.prefix = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", "postgres", "--"]
        subprocess.run([*self.prefix, pg_bin("initdb"), "-D", str(self.data), "-U", "postgres",
                        "--auth=trust", "-E", "UTF8", "--no-sync"], check=True,
                       capture_output=True)
        self.start()

    def ctl(self, *args: str) -> None:
        opts = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c max_connections=200"
        subprocess.run([*self.prefix, pg_bin("pg_ctl"), "-D", str(self.data), "-o", opts,
                        "-l", str(self.data / "log"), "-w", *args], check=True,
                       capture_output=True)

    def start(self) -> None:
        self.ctl("start")

    def stop(self) -> None:
        self.ctl("-m", "fast", "stop")

    def pids(self) -> list[int]:
        master = int((self.data / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(["pgrep", "-P", str(master)], capture_output=True,
                                  text=True).stdout.split()
        return [master, *map(int, children)]

    def new_database(self) -> str:
        import psycopg

        name = "f_" + uuid.uuid4().hex[:10]
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"


def count_checks(url: str) -> int:
    from service.store import Store

    store = Store(url, statement_timeout_s=None)
    try:
        return store.counts()["checks"]
    finally:
        store.close()


# --- the service ----------------------------------------------------------------------------

@dataclass
class Serve:
    port: int
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: float = 60) -> float | None:
        env = {**os.environ, "API_REQUIRE_AUTH": "false", "CDS_REQUIRE_JWT": "false",
               **self.env}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "service.cli", "serve", "--bind",
                 f"127.0.0.1:{self.port}"], cwd=ROOT, env=env, stdout=out,
                stderr=subprocess.STDOUT)
        return wait_for(self.ready, wait)

    def ready(self) -> bool:
        return requests.get(self.base + "/readyz", timeout=2).status_code == 200

    def readyz(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = requests.get(self.base + "/readyz", timeout=2).json()
            return data
        except (requests.RequestException, ValueError):
            return {}

    def metric(self, name: str, **labels: str) -> float:
        text = requests.get(self.base + "/metrics", timeout=10).text
        want = "".join(f'{k}="{v}"' for k, v in labels.items())
        total = 0.0
        for row in text.splitlines():
            if row.startswith(name) and (not labels or want in row):
                total += float(row.rsplit(" ", 1)[1])
        return total

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def worker_pids(self) -> list[int]:
        assert self.proc is not None
        return [int(p) for p in subprocess.run(["pgrep", "-P", str(self.proc.pid)],
                                               capture_output=True, text=True).stdout.split()]


# --- load -----------------------------------------------------------------------------------

@dataclass
class Load:
    """Normal calls from ``clients`` threads (kept-alive connections), each with its own
    X-Request-ID; what happened to each is kept for the report."""

    base: str
    clients: int
    answered: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (when, seconds)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Load:
        for _ in range(self.clients):
            t = threading.Thread(target=self._run, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _run(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                resp = session.post(self.base + CHECK, data=BODY, timeout=30, headers={
                    **JSON_HEADERS, "X-Request-ID": uuid.uuid4().hex})
                kind = "" if resp.status_code == 200 else f"HTTP {resp.status_code}"
            except requests.Timeout:
                kind = "timeout"
            except requests.ConnectionError as exc:
                kind = "refused" if "refused" in str(exc).lower() else "connection"
                session = requests.Session()
                time.sleep(0.05)
            with self._lock:
                if kind:
                    self.errors[kind] += 1
                else:
                    self.answered += 1
                    self.latencies.append((started, time.monotonic() - started))

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=40)

    def percentiles(self, since: float, until: float) -> str:
        window = sorted(s for when, s in self.latencies if since <= when < until)
        if not window:
            return "p50 -, p99 - (no call answered)"
        return (f"p50 {window[len(window) // 2] * 1000:.0f} ms, "
                f"p99 {window[min(len(window) - 1, int(len(window) * 0.99))] * 1000:.0f} ms")


def report(name: str, load: Load, fault: tuple[float, float], recorded: int | None,
           spooled: float, replayed: float, recover: float | None, extra: str = "") -> dict[str,
                                                                                      Any]:
    lost = None if recorded is None else max(0, load.answered - recorded)
    errors = ", ".join(f"{k} {v}" for k, v in sorted(load.errors.items())) or "none"
    recovered = "-" if recover is None else f"{recover:.1f} s"
    print(f"\n== {name}")
    print(f"   answered {load.answered}; errors: {errors}")
    if recorded is not None:
        print(f"   recorded {recorded}; spooled {spooled:.0f}, replayed {replayed:.0f}; "
              f"LOST {lost}")
    print(f"   normal calls during the fault: {load.percentiles(*fault)}")
    print(f"   time to recover: {recovered}{extra}")
    return {"fault": name, "answered": load.answered, "errors": dict(load.errors),
            "recorded": recorded, "spooled": spooled, "replayed": replayed, "lost": lost,
            "during": load.percentiles(*fault), "recover_s": recover}


# --- the faults -----------------------------------------------------------------------------

def store_fault(name: str, work: Path, url: str, inject: Callable[[], None],
                heal: Callable[[], None], args: argparse.Namespace,
                env: dict[str, str] | None = None) -> dict[str, Any]:
    serve = Serve(free_port(), {"DATABASE_URL": url, "SPOOL_DIR": str(work / "spool"),
                                **(env or {})}, work / f"{name}.log")
    if serve.start() is None:
        raise SystemExit(f"faults: serve did not start: {serve.log}")
    load = Load(serve.base, args.clients).start()
    time.sleep(args.calm_seconds)
    began = time.monotonic()
    inject()
    time.sleep(args.fault_seconds)
    heal()
    ended = time.monotonic()
    spool = Path(serve.env["SPOOL_DIR"])

    def drained() -> bool:  # every worker's spool replayed, and /readyz says ready
        return not any(p.stat().st_size for p in spool.glob("*.spool")) \
            and serve.readyz().get("status") == "ok"

    recover = wait_for(drained, 120)
    time.sleep(args.calm_seconds)
    load.stop()
    wait_for(drained, 60)
    spooled = serve.metric("baclofen_check_audit_failures_total", outcome="spooled")
    replayed = serve.metric("baclofen_check_audit_replayed_total")
    lost_metric = serve.metric("baclofen_check_audit_failures_total", outcome="lost")
    serve.stop()
    recorded = count_checks(url)
    return report(name, load, (began, ended), recorded, spooled, replayed, recover,
                  f" (ready, spool empty, after the fault ended); lost counted by the service: "
                  f"{lost_metric:.0f}")


def fault_pg_stop(work: Path, pg: Postgres, args: argparse.Namespace) -> dict[str, Any]:
    return store_fault("PostgreSQL stopped", work, pg.new_database(), pg.stop, pg.start, args)


def fault_pg_freeze(work: Path, pg: Postgres, args: argparse.Namespace) -> dict[str, Any]:
    frozen: list[int] = []

    def freeze() -> None:
        frozen[:] = pg.pids()
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)

    def thaw() -> None:
        for pid in frozen:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    try:
        return store_fault("PostgreSQL frozen (SIGSTOP)", work, pg.new_database(), freeze, thaw,
                           args)
    finally:
        thaw()


@contextmanager
def small_disk(work: Path, megabytes: int) -> Iterator[Path | None]:
    mount = work / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs",
                           str(mount)], capture_output=True)
    if done.returncode != 0:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fault_disk_full(work: Path, _pg: Postgres, args: argparse.Namespace) -> dict[str, Any]:
    with small_disk(work, 96) as disk:
        if disk is None:
            print("\n== disk full under SQLite: skipped (mounting a small tmpfs needs root)")
            return {"fault": "disk full", "skipped": True}
        filler = disk / "filler"

        def fill() -> None:
            with open(filler, "wb") as out, suppress(OSError):
                while True:
                    out.write(b"\0" * (1 << 20))
                    out.flush()

        def free() -> None:
            filler.unlink()

        url = f"sqlite:///{disk}/audit.sqlite3"
        sub = work / "sqlite"
        sub.mkdir()
        return store_fault("disk full under SQLite", sub, url, fill, free, args,
                           {"SPOOL_DIR": str(disk / "spool")})


SLOW_HEAD = (f"POST {CHECK} HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\n"
             f"Content-Length: {len(BODY)}\r\n\r\n").encode()


def slow_clients(port: int, n: int, until: float) -> list[threading.Thread]:
    def trickle() -> None:
        while time.monotonic() < until:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                    sock.sendall(SLOW_HEAD)
                    for byte in BODY:
                        if time.monotonic() >= until:
                            return
                        sock.send(bytes([byte]))
                        time.sleep(1)
            except OSError:
                time.sleep(0.1)

    threads = []
    for _ in range(n):
        t = threading.Thread(target=trickle, daemon=True)
        t.start()
        threads.append(t)
        time.sleep(0.05)  # a little apart, so that they reach every worker
    return threads


def nginx_front(work: Path, upstream: int) -> tuple[subprocess.Popen[bytes], int] | None:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                      else None)
    if nginx is None:
        return None
    port = free_port()
    site = (ROOT / "deploy" / "nginx.conf").read_text()
    site = site.replace("127.0.0.1:8080", f"127.0.0.1:{upstream}").replace(
        "listen 80;", f"listen 127.0.0.1:{port};")
    conf_dir = work / "nginx"
    conf_dir.mkdir()
    (conf_dir / "site.conf").write_text(site)
    user = "user root;\n" if os.geteuid() == 0 else ""
    (conf_dir / "nginx.conf").write_text(
        f"{user}worker_processes 1;\npid {conf_dir}/nginx.pid;\nerror_log {conf_dir}/error.log;\n"
        "events { worker_connections 1024; }\n"
        f"http {{\n access_log off;\n client_body_temp_path {conf_dir}/body;\n"
        f" proxy_temp_path {conf_dir}/proxy;\n fastcgi_temp_path {conf_dir}/f;\n"
        f" uwsgi_temp_path {conf_dir}/u;\n scgi_temp_path {conf_dir}/s;\n"
        f" include {conf_dir}/site.conf;\n}}\n")
    proc = subprocess.Popen([nginx, "-c", str(conf_dir / "nginx.conf"), "-p", str(conf_dir),
                             "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    if wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/healthz",
                                     timeout=1).status_code == 200, 20) is None:
        proc.kill()
        return None
    return proc, port


def fault_slow_clients(work: Path, _pg: Postgres, args: argparse.Namespace
                       ) -> list[dict[str, Any]]:
    url = f"sqlite:///{work}/slow.sqlite3"
    serve = Serve(free_port(), {"DATABASE_URL": url, "SPOOL_DIR": str(work / "spool")},
                  work / "slow.log")
    if serve.start() is None:
        raise SystemExit(f"faults: serve did not start: {serve.log}")
    results = []
    fronts: list[tuple[str, int, subprocess.Popen[bytes] | None]] = [
        ("64 slow clients (1 byte/s), served directly", serve.port, None)]
    front = nginx_front(work, serve.port)
    if front is not None:
        fronts.append(("64 slow clients (1 byte/s), behind nginx (deploy/nginx.conf)",
                       front[1], front[0]))
    else:
        print("\n== slow clients behind nginx: skipped (nginx is not installed)")
    try:
        for name, port, _proc in fronts:
            base = f"http://127.0.0.1:{port}"
            duration = max(args.fault_seconds * 2, 20)
            until = time.monotonic() + duration
            slow = slow_clients(port, 64, until)
            time.sleep(3)
            began = time.monotonic()
            load = Load(base, args.clients).start()
            healthy = Counter[str]()
            while time.monotonic() < until - 1:
                try:
                    fresh = requests.get(base + "/healthz", timeout=5,
                                         headers={"Connection": "close"})
                    healthy["ok" if fresh.status_code == 200 else "bad"] += 1
                except requests.RequestException:
                    healthy["failed"] += 1
                time.sleep(0.5)
            ended = time.monotonic()
            load.stop()
            for t in slow:
                t.join(timeout=5)
            results.append(report(name, load, (began, ended), None, 0, 0, None,
                                  f"; /healthz on new connections: {dict(healthy)}"))
    finally:
        for _name, _port, proc in fronts:
            if proc is not None:
                proc.terminate()
                proc.wait()
        serve.stop()
    return results


def fault_blank_lines(work: Path, _pg: Postgres, args: argparse.Namespace) -> dict[str, Any]:
    serve = Serve(free_port(), {"DATABASE_URL": f"sqlite:///{work}/blank.sqlite3",
                                "SPOOL_DIR": str(work / "spool")}, work / "blank.log")
    if serve.start() is None:
        raise SystemExit(f"faults: serve did not start: {serve.log}")

    def cpu() -> float:
        total = 0
        for pid in serve.worker_pids():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    body = b"\n" * 20_000_000 + BODY.replace(b"\n", b"") + b"\n"
    before, started = cpu(), time.monotonic()
    resp = requests.post(serve.base + CHECK, data=body, timeout=120, headers={
        "Content-Type": "application/fhir+ndjson"})
    wall = time.monotonic() - started
    time.sleep(1)
    spent = cpu() - before
    serve.stop()
    last = resp.text.strip().splitlines()[-1][:160] if resp.text.strip() else ""
    print("\n== 20 MB of blank NDJSON lines and one input")
    print(f"   HTTP {resp.status_code} in {wall:.1f} s; worker CPU {spent:.2f} s; last line: "
          f"{last}")
    return {"fault": "20 MB blank lines", "status": resp.status_code, "wall_s": wall,
            "worker_cpu_s": spent}


def fault_master_kill(work: Path, _pg: Postgres, args: argparse.Namespace) -> dict[str, Any]:
    url = f"sqlite:///{work}/kill.sqlite3"
    port = free_port()
    first = Serve(port, {"DATABASE_URL": url, "SPOOL_DIR": str(work / "spool")},
                  work / "kill-1.log")
    if first.start() is None:
        raise SystemExit(f"faults: serve did not start: {first.log}")
    load = Load(first.base, args.clients).start()
    time.sleep(args.calm_seconds)
    assert first.proc is not None
    began = time.monotonic()
    os.kill(first.proc.pid, signal.SIGKILL)
    first.proc.wait()
    dead_dirs = glob.glob(f"{tempfile.gettempdir()}/baclofen-check-metrics-{first.proc.pid}-*")
    second = Serve(port, first.env, work / "kill-2.log")
    second.start(wait=0)
    # answered by the new master's workers (the old ones may still answer for a moment)
    recover = wait_for(lambda: "Booting worker" in second.log.read_text() and second.ready(),
                       60)
    ended = time.monotonic()
    time.sleep(args.calm_seconds)
    load.stop()
    second.stop()
    in_use = "Connection in use" in second.log.read_text()
    left = [d for d in dead_dirs if Path(d).exists()]
    recorded = count_checks(url)
    return report("gunicorn master killed (SIGKILL) under load, restarted at once", load,
                  (began, ended), recorded, 0, 0, recover,
                  f" (restart: {'port still in use' if in_use else 'bound at once'}; dead "
                  f"run's metrics directory {'left' if left else 'removed'})")


FAULTS: dict[str, Callable[[Path, Postgres, argparse.Namespace], Any]] = {
    "pg-stop": fault_pg_stop, "pg-freeze": fault_pg_freeze, "disk-full": fault_disk_full,
    "slow-clients": fault_slow_clients, "blank-lines": fault_blank_lines,
    "master-kill": fault_master_kill,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=sorted(FAULTS), default=None)
    parser.add_argument("--fault-seconds", type=float, default=10)
    parser.add_argument("--calm-seconds", type=float, default=3)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the logs and databases")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    work = Path(tempfile.mkdtemp(prefix="baclofen-check-faults-"))
    os.chmod(work, 0o755)
    pg = Postgres(work / "pgbase")
    results: list[Any] = []
    try:
        for name in args.only or list(FAULTS):
            out = FAULTS[name](work / name if (work / name).mkdir() is None else work, pg, args)
            results.extend(out if isinstance(out, list) else [out])
    finally:
        with suppress(Exception):
            for pid in pg.pids():
                os.kill(pid, signal.SIGCONT)
        with suppress(Exception):
            pg.ctl("-m", "immediate", "stop")
        if args.keep:
            print(f"\nlogs and databases kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    lost = [r for r in results if r.get("lost")]
    print("\nlost records: " + ("none" if not lost else
                                 ", ".join(f"{r['fault']}: {r['lost']}" for r in lost)))
    return 1 if lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
