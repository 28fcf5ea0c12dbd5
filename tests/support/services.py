"""Real services for the tests: a throwaway PostgreSQL cluster and the sekmet FHIR server.

Both are started once per test session on free loopback ports in temporary directories, and
stopped at the end (PostgreSQL by ``pg_ctl stop``, sekmet by its PID). Nothing is mocked. When
a needed program is missing the fixture fails with the command that installs it (``make test``
checks this before pytest runs; see tools/check-system).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
SEKMET = ROOT / ".venv-sekmet" / "bin" / "sekmet"
SEKMET_TOKEN = "sekmet-test-token"
PG_INSTALL = "apt-get install -y postgresql"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until(check: object, what: str, attempts: int = 300) -> None:
    """Poll ``check()`` until it is true; a readiness wait, not a timed assertion."""
    for _ in range(attempts):
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    pytest.fail(f"{what} did not become ready")


# --- PostgreSQL ---------------------------------------------------------------------------

def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not candidates:
        pytest.fail(f"PostgreSQL's {name} is missing: install it with `{PG_INSTALL}`")
    return candidates[-1]


@dataclass
class Postgres:
    port: int
    admin_url: str

    def new_database(self) -> str:
        """A fresh empty database; returns its SQLAlchemy URL."""

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    # not under pytest's temporary root: that is private to root, and the server runs as
    # the postgres user
    base = Path(tempfile.mkdtemp(prefix="baclofen-check-pg-"))
    data, sockets = base / "data", base / "sock"
    sockets.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: use its own system user
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail(f"the postgres system user is missing: install `{PG_INSTALL}`")
        for path in (base, sockets):
            os.chown(path, user.pw_uid, user.pw_gid)
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        prefix = [runuser, "-u", "postgres", "--"]
    subprocess.run([*prefix, initdb, "-D", str(data), "-U", "postgres", "--auth=trust",
                    "-E", "UTF8", "--no-sync"], check=True, capture_output=True)
    port = free_port()
    opts = (f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=50")
    subprocess.run([*prefix, pg_ctl, "-D", str(data), "-o", opts, "-l", str(base / "log"),
                    "-w", "start"], check=True, capture_output=True)
    try:
        yield Postgres(port, f"postgresql://postgres@127.0.0.1:{port}/postgres")
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
                       check=False, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


# --- sekmet FHIR server -------------------------------------------------------------------

@dataclass
class Sekmet:
    base_url: str
    token: str
    pid: int

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Content-Type": "application/fhir+json",
                "Accept": "application/fhir+json"}

    def put(self, resource: dict[str, object]) -> dict[str, object]:
        url = f"{self.base_url}/{resource['resourceType']}/{resource['id']}"
        resp = requests.put(url, json=resource, headers=self.headers(), timeout=10)
        assert resp.status_code in {200, 201}, resp.text
        return dict(resp.json())

    def get(self, path: str) -> requests.Response:
        return requests.get(f"{self.base_url}/{path}", headers=self.headers(), timeout=10)


def sekmet_settings(home: Path, port: int, server_auth: str) -> Path:
    """Write sekmet's settings file; ``server_auth``: the YAML lines under ``server_auth:``
    (indented by two spaces)."""
    path = home / "settings.yaml"
    path.write_text(
        f"base_url: http://127.0.0.1:{port}/fhir\n"
        "host: 127.0.0.1\n"
        f"port: {port}\n"
        f"data_dir: {home / 'data'}\n"
        "log_inbound: false\n"
        "simulator:\n  enabled: false\n"
        "validation:\n  inbound: strict\n"
        "server_auth:\n" + server_auth,
        encoding="utf-8",
    )
    return path


@contextmanager
def running_sekmet(home: Path, port: int, server_auth: str) -> Iterator[int]:
    """sekmet serving on ``port`` with its data under ``home`` until the block ends; yields
    its PID."""
    if not SEKMET.exists():
        pytest.fail("the sekmet FHIR server is not installed: run `make .venv-sekmet/.installed`")
    settings = sekmet_settings(home, port, server_auth)
    base = f"http://127.0.0.1:{port}/fhir"
    log = open(home / "sekmet.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([str(SEKMET), "serve", "-c", str(settings)],
                            cwd=home, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)

    def ready() -> bool:
        if proc.poll() is not None:
            pytest.fail("sekmet exited: " + (home / "sekmet.log").read_text()[-2000:])
        try:
            return requests.get(f"{base}/metadata", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    try:
        _wait_until(ready, "the sekmet FHIR server")
        yield proc.pid
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture(scope="session")
def sekmet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sekmet]:
    home = tmp_path_factory.mktemp("sekmet")
    port = free_port()
    auth = f"  types: [bearer]\n  tokens: [{SEKMET_TOKEN}]\n"
    with running_sekmet(home, port, auth) as pid:
        yield Sekmet(f"http://127.0.0.1:{port}/fhir", SEKMET_TOKEN, pid)


# --- baclofen-check serve -----------------------------------------------------------------

@contextmanager
def running_serve(log_dir: Path, port: int, env: dict[str, str], workers: int,
                  threads: int) -> Iterator[str]:
    """``baclofen-check serve`` (real gunicorn) on ``port`` with the environment ``env`` until
    the block ends; yields its base URL once ``/readyz`` answers 200."""
    env = dict(env)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = open(log_dir / "serve.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--bind", f"127.0.0.1:{port}",
         "--workers", str(workers), "--threads", str(threads)], cwd=ROOT, env=env,
        stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            pytest.fail("serve exited: " + (log_dir / "serve.log").read_text()[-3000:])
        try:
            return requests.get(base + "/readyz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    try:
        _wait_until(ready, "baclofen-check serve", attempts=600)
        yield base
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
