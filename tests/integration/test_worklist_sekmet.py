"""The worklist end to end against the real sekmet FHIR server and the real watch worker: a
new lab on the server -> notification -> re-check -> a worklist entry with the order's
product, dose and daily mg -> a Task on the server (WATCH_TASK_OWNER) -> resolved from the
page in headless Chromium -> the DetectedIssue's mitigation and the Task completed on the
server; the write-back keeps the mitigation through a cancellation and a new raise; a finding
raised with new numbers comes back with a new Task; a finding no longer raised cancels its
Task."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from service import create_app
from service.store import get_store
from tests.support.browser import OUTPUT, wait
from tests.support.fhir_validate import validate
from tests.support.services import Sekmet, free_port
from tests.support.watch_world import Record, wait_for, watch_world
from tests.support.watch_world import World as WatchWorld

NOTIFY_TOKEN = "worklist-notify-" + uuid.uuid4().hex
PHARMACIST = "pharmacist-token-0123"
OWNER = "Organization/pharmacy"


class World(WatchWorld):
    """The watch's test world (tests/integration/test_watch_sekmet.py) with the worklist's reads."""

    @property
    def base(self) -> str:
        return self.settings.public_base_url

    def worklist(self, query: str = "") -> dict[str, Any]:
        resp = requests.get(f"{self.base}/worklist.json{query}", timeout=10,
                            headers={"Authorization": f"Bearer {PHARMACIST}"})
        assert resp.status_code == 200, resp.text
        return dict(resp.json())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with watch_world(tmp_path_factory.mktemp("sekmet-worklist"), NOTIFY_TOKEN, World,
                     API_TOKENS=f"{PHARMACIST}:write", WATCH_TASK_OWNER=OWNER) as world:
        yield world


def read(sek: Sekmet, ref: str) -> dict[str, Any]:
    resp = sek.get(ref)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_new_lab_to_worklist_to_task_to_resolve_in_the_browser(
        world: World, browser: WebDriver) -> None:
    sek, ws = world.sekmet, world.ws
    rec = Record(sek)
    pid, oid, subject, lab = rec.pid, rec.oid, rec.subject, rec.lab

    def settle(what: str) -> None:
        wait_for(lambda: ws.entries(), what)
        assert world.worker().drain() >= 1

    rec.seed()
    assert world.command(watch_command="subscribe", remove=False)["created"]
    wait_for(lambda: all(e["resource"]["status"] == "active" for e in sek.get(
        "Subscription?_count=100").json().get("entry", [])), "the Subscriptions to be active")

    # --- a new lab: CrCl 44.7 mL/min, the 45 mg/day is over the 40 mg/day renal cap ---------
    lab(1.5, 2)
    settle("the new lab's notification")
    listed = world.worklist()
    assert listed["total"] == 1
    entry = listed["entries"][0]
    assert (entry["patient"], entry["order"], entry["rule"], entry["severity"]) == (
        f"Patient/{pid}", f"MedicationRequest/{oid}", "renal.dose-band", "high")
    assert "44.7 mL/min" in entry["summary"]
    assert entry["medication"]["dailyMg"] == 45
    assert entry["medication"]["dose"] == "15 mg three times a day"
    assert entry["medication"]["product"].lower().startswith("baclofen")
    assert entry["trigger"]["resource"] == f"Observation/cr-{rec.tag}-2"
    assert entry["trigger"]["kind"] == "notification"
    issue_ref, task_ref = entry["detectedIssue"], entry["task"]
    assert issue_ref.startswith("DetectedIssue/") and task_ref.startswith("Task/bc-task-")

    # the Task on the server, in the EHR's own worklist
    task = read(sek, task_ref)
    validate(task)
    assert (task["status"], task["intent"], task["priority"]) == ("requested", "order", "asap")
    assert task["focus"] == {"reference": issue_ref}
    assert task["for"] == subject and task["owner"] == {"reference": OWNER}
    assert datetime.fromisoformat(task["authoredOn"].replace("Z", "+00:00")).tzinfo is not None
    # idempotent: a sync with nothing new writes nothing
    world.worker().worklist()
    assert read(sek, task_ref)["meta"]["versionId"] == task["meta"]["versionId"]

    # --- resolved from the page -------------------------------------------------------------
    browser.get(world.base + "/worklist")
    field = browser.find_element(By.ID, "token")
    field.send_keys(PHARMACIST)
    browser.find_element(By.ID, "refresh").click()
    row_css = f"tr[data-finding='{entry['finding']}']"
    row = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, row_css), "the entry")[0]
    assert "45 mg/day" in row.text and "44.7 mL/min" in row.text
    OUTPUT.mkdir(exist_ok=True)
    browser.set_window_size(1366, 1250)
    browser.execute_script("document.getElementById('list-h').scrollIntoView()")
    browser.save_screenshot(str(OUTPUT / "worklist.png"))
    browser.set_window_size(1366, 860)
    Select(row.find_element(By.NAME, "outcome")).select_by_value("dose-changed")
    row.find_element(By.NAME, "comment").send_keys("reduced to 10 mg three times a day")
    row.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(browser, lambda d: d.find_element(By.ID, "status").get_attribute("data-state")
         == "resolved", "the resolution to be confirmed")
    assert "mitigation written to " + issue_ref in browser.find_element(By.ID, "status").text
    wait(browser, lambda d: not d.find_elements(By.CSS_SELECTOR, row_css), "the row to go")
    assert world.worklist()["total"] == 0

    issue = read(sek, issue_ref)
    validate(issue)
    [mitigation] = issue["mitigation"]
    assert mitigation["action"]["coding"] == [{"system": "urn:baclofen-check:intervention",
                                               "code": "dose-changed",
                                               "display": "Dose changed"}]
    assert mitigation["action"]["text"] == "Dose changed: reduced to 10 mg three times a day"
    assert mitigation["author"]["display"].startswith("token:")
    assert mitigation["date"].endswith("Z")
    task = read(sek, task_ref)
    validate(task)
    assert task["status"] == "completed"
    assert task["output"][0]["valueCodeableConcept"]["coding"][0]["code"] == "dose-changed"
    # a second resolve of the same finding: 409
    again = requests.post(f"{world.base}/worklist/{entry['finding']}/resolve", timeout=10,
                          json={"outcome": "stopped"},
                          headers={"Authorization": f"Bearer {PHARMACIST}"})
    assert again.status_code == 409

    # --- the write-back keeps the mitigation -------------------------------------------------
    lab(0.8, 3)          # kidneys better: the finding is cancelled
    settle("the better lab's notification")
    issue = read(sek, issue_ref)
    assert issue["status"] == "cancelled" and len(issue["mitigation"]) == 1
    lab(1.5, 4)          # worse again: the same value, of a new date
    settle("the worse lab's notification")
    issue = read(sek, issue_ref)
    assert issue["status"] == "final" and issue["mitigation"] == [mitigation]

    # raised again with new numbers: back on the list with a new Task
    listed = world.worklist()
    assert [e["finding"] for e in listed["entries"]] == [entry["finding"]]
    back = listed["entries"][0]
    assert back["reopened"] is True and back["resolution"]["outcome"] == "dose-changed"
    assert back["task"] != task_ref and read(sek, back["task"])["status"] == "requested"

    # --- the prescriber lowers the dose: the finding is no longer raised, its Task cancelled -
    rec.order(10)
    settle("the order change's notification")
    # (what the new dose raises is a finding of its own: 30 mg/day at 71 years with CrCl 44.7)
    now_open = world.worklist()["entries"]
    assert [(e["rule"], e["order"]) for e in now_open] == [
        ("geriatric.renal", f"MedicationRequest/{oid}")]
    assert "Ordered 30 mg/day" in now_open[0]["summary"]
    assert now_open[0]["medication"]["dailyMg"] == 30
    cancelled = read(sek, back["task"])
    validate(cancelled)
    assert cancelled["status"] == "cancelled"
    assert read(sek, task_ref)["status"] == "completed"
    assert world.command(watch_command="subscribe", remove=True)["deleted"]


def test_a_resolution_the_server_cannot_take_now_is_written_by_the_worker(
        world: World) -> None:
    sek, ws = world.sekmet, world.ws
    rec = Record(sek).seed()
    assert world.command(watch_command="subscribe", remove=False)["created"]
    wait_for(lambda: all(e["resource"]["status"] == "active" for e in sek.get(
        "Subscription?_count=100").json().get("entry", [])), "the Subscriptions to be active")
    rec.lab(1.5, 2)
    wait_for(lambda: ws.entries(), "the new lab's notification")
    assert world.worker().drain() == 1
    [entry] = [e for e in world.worklist()["entries"] if e["patient"] == f"Patient/{rec.pid}"]
    # the same store, but the FHIR server is not reachable from this replica now
    down = create_app({
        "API_REQUIRE_AUTH": True, "API_TOKENS": f"{PHARMACIST}:write", "CDS_REQUIRE_JWT": False,
        "DATABASE_URL": world.settings.database_url, "TESTING": True,
        "FHIR_SERVER_URL": f"http://127.0.0.1:{free_port()}/fhir",
        "WATCH_NOTIFY_TOKEN": NOTIFY_TOKEN, "WATCH_TASK_OWNER": OWNER})
    resp = down.test_client().post(f"/worklist/{entry['finding']}/resolve",
                                   json={"outcome": "stopped", "comment": "stopped today"},
                                   headers={"Authorization": f"Bearer {PHARMACIST}"})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["resolution"]["mitigationOnServer"] is False
    get_store(down).close()
    assert "mitigation" not in read(sek, entry["detectedIssue"])
    assert read(sek, entry["task"])["status"] == "requested"
    assert entry["finding"] not in [e["finding"] for e in world.worklist()["entries"]]
    # the worker's period writes it
    world.worker().worklist()
    [mitigation] = read(sek, entry["detectedIssue"])["mitigation"]
    assert mitigation["action"]["coding"][0]["code"] == "stopped"
    assert read(sek, entry["task"])["status"] == "completed"
    assert world.command(watch_command="subscribe", remove=True)["deleted"]
