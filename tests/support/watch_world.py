"""The watch's test world on a sekmet FHIR server of its own, for the watch, worklist and topic
tests: sekmet with one delivery attempt per notification, the service on a fixed loopback port
as the notification receiver."""

from __future__ import annotations

import argparse
import io
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

from service import create_app
from service.config import Settings
from service.knowledge import load
from service.store import get_store
from service.watch.commands import watch_cmd
from service.watch.queue import WatchStore
from service.watch.worker import Worker
from tests.support.builders import dosage, order, patient
from tests.support.context_builders import creatinine, weight
from tests.support.services import SEKMET_TOKEN, Sekmet, free_port, running_sekmet

NOTIFY_TOKEN = "watch-notify-" + uuid.uuid4().hex


def wait_for(check: Callable[[], Any], what: str, seconds: float = 20) -> Any:
    """Poll until ``check()`` is truthy (a readiness wait for asynchronous deliveries, not a
    timed assertion)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"{what} did not happen within {seconds} s")


class Receiver:
    """The service on a fixed loopback port, which can be stopped and started again."""

    def __init__(self, app: Flask, port: int) -> None:
        self.app, self.port = app, port
        self.server: BaseWSGIServer | None = None

    def start(self) -> None:
        self.server = make_server("127.0.0.1", self.port, self.app, threaded=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@dataclass
class World:
    sekmet: Sekmet
    app: Flask
    settings: Settings
    ws: WatchStore
    receiver: Receiver

    def worker(self) -> Worker:
        return Worker(self.settings, get_store(self.app), self.ws, load())

    def command(self, **args: Any) -> dict[str, Any]:
        out = io.StringIO()
        assert watch_cmd(argparse.Namespace(**args), out, self.settings, kb=load()) == 0
        return dict(json.loads(out.getvalue()))


@contextmanager
def watch_world(home: Path, notify_token: str, world: type[World] = World,
                **config: Any) -> Iterator[Any]:
    port = free_port()
    with running_sekmet(home, port, f"  types: [bearer]\n  tokens: [{SEKMET_TOKEN}]\n"
                        "subscriptions:\n  retries: 1\n") as pid:
        sek = Sekmet(f"http://127.0.0.1:{port}/fhir", SEKMET_TOKEN, pid)
        our_port = free_port()
        app = create_app({
            "API_REQUIRE_AUTH": True, "API_TOKENS": "t", "CDS_REQUIRE_JWT": False,
            "DATABASE_URL": f"sqlite:///{home}/audit.sqlite3",
            "FHIR_SERVER_URL": sek.base_url, "FHIR_SERVER_TOKEN": SEKMET_TOKEN,
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{our_port}",
            "WATCH_NOTIFY_TOKEN": notify_token, "TESTING": True, **config,
        })
        receiver = Receiver(app, our_port)
        receiver.start()
        try:
            yield world(sek, app, app.config["SETTINGS"], app.extensions["watch"], receiver)
        finally:
            receiver.stop()


@dataclass
class Record:
    """A 71-year-old of 70 kg on baclofen 15 mg three times a day (45 mg/day), on the server.
    Labs are 9 days apart, each alone in the renal rules' 7-day window of the newest:
    creatinine 0.8 mg/dL gives CrCl 84 mL/min (no finding), 1.5 gives 44.7 (over the
    40 mg/day renal cap)."""

    sek: Sekmet
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    today: date = field(default_factory=lambda: datetime.now(UTC).date())

    @property
    def pid(self) -> str:
        return f"p-{self.tag}"

    @property
    def oid(self) -> str:
        return f"o-{self.tag}"

    @property
    def subject(self) -> dict[str, str]:
        return {"reference": f"Patient/{self.pid}"}

    def lab(self, value: float, n: int) -> dict[str, Any]:
        res = creatinine(value, id=f"cr-{self.tag}-{n}",
                         when=str(self.today - timedelta(days=54 - 9 * n)))
        res["subject"] = self.subject
        return self.sek.put(res)

    def order(self, dose_mg: float) -> dict[str, Any]:
        return self.sek.put(order(dosage(dose_mg), id=self.oid, status="active",
                                  subject=self.subject,
                                  authoredOn=f"{self.today - timedelta(days=60)}T08:00:00Z"))

    def seed(self) -> Record:
        self.sek.put(patient(id=self.pid, birth_date=f"{self.today.year - 71}-01-01"))
        w = weight(70, id=f"w-{self.tag}", when=str(self.today - timedelta(days=20)))
        w["subject"] = self.subject
        self.sek.put(w)
        self.lab(0.8, 1)
        self.order(15)
        return self
