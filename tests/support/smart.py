"""A sekmet FHIR server that takes SMART Backend Services tokens, the loopback server that
publishes our key set to it, our key files and the settings of an app that uses them (the SMART
Backend Services tests and ``review --fhir-server`` with SMART)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from werkzeug.serving import make_server

from service import create_app
from tests.support.checks import TOKEN, WRITE_TOKEN
from tests.support.httpstub import serving
from tests.support.keypairs import ec_key, rsa_key, write_jwks, write_pem
from tests.support.services import free_port, running_sekmet

ROOT = Path(__file__).resolve().parents[2]
CLIENT = "baclofen-check"
SERVED_CLIENT = "baclofen-check-served"
SEEDER, SEEDER_SECRET = "test-seeder", "seeder-secret"
TEST_SCOPE = "system/*.cruds"
WRITE = {"Authorization": f"Bearer {WRITE_TOKEN}"}
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Switch:
    """One loopback HTTP server whose WSGI app the test chooses (sekmet fetches our key set
    from it while the test thread calls the app)."""

    def __init__(self) -> None:
        self.app: Flask | None = None

    def __call__(self, environ: Any, start_response: Any) -> Any:
        assert self.app is not None
        return self.app(environ, start_response)


@dataclass
class SmartSekmet:
    home: Path
    port: int
    app_port: int
    served_port: int
    stack: ExitStack = field(default_factory=ExitStack)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    @property
    def token_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/auth/token"

    def start(self, lifetime: int = 3600, register: bool = True) -> None:
        """(Re)start sekmet: SMART only, our client registered with our jwks_url or not."""
        self.stack.close()
        self.stack = ExitStack()
        clients = [f"    - client_id: {SEEDER}\n      client_secret: {SEEDER_SECRET}\n"
                   f"      scopes: {TEST_SCOPE}\n"]
        if register:
            for cid, port in ((CLIENT, self.app_port), (SERVED_CLIENT, self.served_port)):
                clients.append(f"    - client_id: {cid}\n      jwks_url: http://127.0.0.1:"
                               f"{port}/.well-known/jwks.json\n      scopes: {TEST_SCOPE}\n")
        auth = (f"  types: [smart]\n  token_lifetime: {lifetime}\n  smart_clients:\n"
                + "".join(clients))
        self.stack.enter_context(running_sekmet(self.home, self.port, auth))

    def wipe(self) -> None:
        """Forget sekmet's data, its token-signing secret included (tokens it issued before
        are refused from now on)."""
        self.stack.close()
        for path in (self.home / "data").glob("*"):
            path.unlink()

    def seeder_token(self) -> str:
        basic = base64.b64encode(f"{SEEDER}:{SEEDER_SECRET}".encode()).decode()
        resp = requests.post(self.token_url, data={"grant_type": "client_credentials",
                                                   "scope": TEST_SCOPE},
                             headers={"Authorization": f"Basic {basic}"}, timeout=10)
        assert resp.status_code == 200, resp.text
        return str(resp.json()["access_token"])

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.seeder_token()}",
                "Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}

    def put(self, resource: dict[str, Any]) -> None:
        url = f"{self.base}/{resource['resourceType']}/{resource['id']}"
        resp = requests.put(url, json=resource, headers=self.headers(), timeout=10)
        assert resp.status_code in {200, 201}, resp.text

    def get(self, path: str) -> requests.Response:
        return requests.get(f"{self.base}/{path}", headers=self.headers(), timeout=10)


@pytest.fixture(scope="module")
def switch() -> Iterator[tuple[Switch, int]]:
    sw = Switch()
    port = free_port()
    server = make_server("127.0.0.1", port, sw, threaded=True)
    with serving(server):  # type: ignore[arg-type]
        yield sw, port


@pytest.fixture(scope="module")
def smart(tmp_path_factory: pytest.TempPathFactory,
          switch: tuple[Switch, int]) -> Iterator[SmartSekmet]:
    server = SmartSekmet(tmp_path_factory.mktemp("sekmet-smart"), free_port(), switch[1],
                         free_port())
    server.start()
    try:
        yield server
    finally:
        server.stack.close()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Key files: one RSA key; the rotation pair [k1, k2] and [k2, k1]; an EC key; a key
    never published; an RSA and an EC key together.

    The rotation pair is of one type: sekmet tries every key of a client's set in turn and
    answers 500 when it meets a key of another type than the assertion's (it catches only
    PyJWT's own errors)."""
    d = tmp_path_factory.mktemp("smart-keys")
    k1, k2, k3 = rsa_key(), rsa_key(), rsa_key()
    return {
        "mixed": write_jwks(d / "mixed.jwks", [("r", rsa_key()), ("e", ec_key())]),
        "rsa": write_pem(d / "rsa.pem", rsa_key()),
        "ec": write_pem(d / "ec.pem", ec_key()),
        "old-first": write_jwks(d / "old-first.jwks", [("k1", k1), ("k2", k2)]),
        "new-first": write_jwks(d / "new-first.jwks", [("k2", k2), ("k1", k1)]),
        "unpublished": write_jwks(d / "k3.jwks", [("k3", k3)]),
    }


def settings_for(smart: SmartSekmet, tmp_path: Path, keys_path: str,
                 **extra: Any) -> dict[str, Any]:
    return {
        "API_REQUIRE_AUTH": True, "API_TOKENS": f"{TOKEN},{WRITE_TOKEN}:write",
        "CDS_REQUIRE_JWT": False, "DATABASE_URL": f"sqlite:///{tmp_path}/audit.sqlite3",
        "FHIR_SERVER_URL": smart.base, "FHIR_SERVER_AUTH": "smart-backend",
        "SMART_CLIENT_ID": CLIENT, "SMART_PRIVATE_KEYS": keys_path, "SMART_SCOPE": TEST_SCOPE,
        "FHIR_ALLOWLIST": f"{smart.base},{smart.token_url}",
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{smart.app_port}", "OUTBOUND_TIMEOUT_S": 5,
        "TESTING": True, **extra,
    }


def serve_app(switch: tuple[Switch, int], settings: dict[str, Any]) -> Flask:
    app = create_app(settings)
    switch[0].app = app
    return app
