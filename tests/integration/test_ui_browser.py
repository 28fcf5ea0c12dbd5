"""The web page in a real browser: Debian's headless Chromium driven by Selenium through
Debian's chromedriver, against the app served on a free loopback port.

Waits below are readiness waits (WebDriverWait polls until the page has reached a state), not
timed assertions. Screenshots of each page are saved under test-output/ (gitignored).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from service.knowledge import load
from tests.support.browser import (
    TOKEN,
    WAIT_S,
    cards,
    no_console_errors,
    pick_demo,
    screenshot,
    set_value,
    status_done,
    wait,
)
from tests.support.demo import DEMO_FINDINGS

# --- try an order ----------------------------------------------------------------------------

def test_renal_cap_warning_and_its_suggestion(page, live):
    browser = page
    """CrCl 40 demo: raise the dose above the renal cap, see the warning card with the numbers,
    apply its suggestion, and see the card go."""
    said = pick_demo(browser, live.base, "2-crcl-40")
    assert said.startswith("Demo patient loaded and checked.")
    assert browser.find_element(By.ID, "dose").get_attribute("value") == "5"
    assert browser.find_element(By.ID, "no-cards").text == "No cards: checked, nothing found."
    assert Select(browser.find_element(By.ID, "frequency")).first_selected_option.text == \
        "three times a day"

    set_value(browser.find_element(By.ID, "dose"), "20")
    browser.find_element(By.ID, "check").click()
    wait(browser, lambda d: "renal.dose-band" in cards(d), "the renal card")
    status_done(browser)
    card = cards(browser)["renal.dose-band"]
    assert "card-warning" in (card.get_attribute("class") or "")
    assert card.find_element(By.CSS_SELECTOR, ".indicator").text == "WARNING"  # CSS uppercase
    summary = card.find_element(By.CSS_SELECTOR, ".summary").text
    assert "60 mg/day" in summary and "40 mg/day" in summary and "CrCl 40 mL/min" in summary
    detail = card.find_element(By.CSS_SELECTOR, ".detail").text
    for text in ("CrCl 40 mL/min", "Cockcroft-Gault", "cap 40 mg/day", "Ordered 60 mg/day",
                 "20 mg \u00d7 3 a day = 60 mg/day"):
        assert text in detail
    # the Markdown detail is rendered: bold title, a list, a link to the source
    assert card.find_element(By.CSS_SELECTOR, ".detail strong").text == \
        load().rule("renal.dose-band").title
    assert card.find_element(By.CSS_SELECTOR, ".detail ul li").text.endswith("60 mg/day")
    link = card.find_element(By.CSS_SELECTOR, ".detail a")
    assert link.get_attribute("href") == load().rule("renal.dose-band").source_url
    # the raw DetectedIssue beside the card
    issue = json.loads(card.find_element(By.CSS_SELECTOR, ".card-json pre").text)
    assert issue["resourceType"] == "DetectedIssue"
    assert {"system": "urn:baclofen-check:rule", "value": "renal.dose-band"} in \
        issue["identifier"]
    assert issue["severity"] == "moderate"
    # the $check result Bundle says the same
    notes = browser.find_element(By.ID, "notes").text
    assert "DetectedIssues in the result Bundle" in notes
    screenshot(browser, "try-warning")

    rule_link = card.find_element(By.CSS_SELECTOR, ".source a[href*='/rules#']")
    assert rule_link.get_attribute("href") == live.base + "/rules#rule-renal.dose-band"
    suggestion = card.find_element(By.CSS_SELECTOR, "button.suggestion")
    label = suggestion.text
    assert label.startswith("Change to ") and "40 mg/day" in label
    suggestion.click()
    wait(browser, lambda d: d.find_element(By.ID, "status").text.startswith("Applied: "),
         "the suggestion to be applied and checked again")
    status_done(browser)
    assert "renal.dose-band" not in cards(browser)
    wait(browser, lambda d: d.switch_to.active_element.get_attribute("id") == "status",
         "the focus to move to the status line (the clicked button is gone)")
    # the corrected dose is in the form, and it is within the cap
    dose = float(browser.find_element(By.ID, "dose").get_attribute("value") or 0)
    per_day = float(Select(browser.find_element(By.ID, "frequency"))
                    .first_selected_option.get_attribute("value") or 0)
    assert 0 < dose * per_day <= 40
    screenshot(browser, "try-after-suggestion")
    no_console_errors(browser)


def test_keyboard_only_check(browser, live):
    """The form works from the keyboard: focus the dose, type, submit with Enter."""
    pick_demo(browser, live.base, "3-dialysis")
    assert "renal.dialysis" in cards(browser)
    card = cards(browser)["renal.dialysis"]
    assert "card-critical" in (card.get_attribute("class") or "")
    dose = browser.find_element(By.ID, "dose")
    dose.click()
    set_value(dose, "2.5\n")  # Enter submits the form
    status_done(browser)
    assert "Ordered 7.5 mg/day" in cards(browser)["renal.dialysis"].text
    assert browser.switch_to.active_element.get_attribute("id") == "dose"
    # the suggestion is a button: Enter applies it
    suggestion = cards(browser)["renal.dialysis"].find_element(By.CSS_SELECTOR,
                                                               "button.suggestion")
    assert "5 mg/day" in suggestion.text
    suggestion.send_keys(Keys.ENTER)
    wait(browser, lambda d: d.find_element(By.ID, "status").text.startswith("Applied: "),
         "the suggestion to be applied")
    status_done(browser)
    # on dialysis any oral baclofen is flagged, but at 5 mg/day no longer as high
    card = cards(browser)["renal.dialysis"]
    assert "card-warning" in (card.get_attribute("class") or "")
    assert "Ordered 5 mg/day" in card.text
    screenshot(browser, "try-dialysis")


def _rule_ids(issues: list[dict[str, Any]]) -> list[str]:
    return sorted(i["value"] for di in issues for i in di["identifier"]
                  if i["system"] == "urn:baclofen-check:rule")


@pytest.mark.parametrize(("name", "expected"), DEMO_FINDINGS,
                         ids=[name for name, _ in DEMO_FINDINGS])
def test_each_demo_gives_the_same_findings_as_cards_and_from_check(browser, live, name,
                                                                    expected):
    """The prefetch the page builds from the record carries everything the rules need: the
    cards hold the same findings as the $check result Bundle."""
    pick_demo(browser, live.base, name)
    on_cards: list[dict[str, Any]] = []
    for card in cards(browser).values():
        raw = json.loads(card.find_element(By.CSS_SELECTOR, ".card-json pre").text)
        on_cards += raw if isinstance(raw, list) else [raw]
    result = json.loads(browser.execute_script(
        "return document.getElementById('raw').textContent"))
    in_bundle = [e["resource"] for e in result["entry"]
                 if e["resource"]["resourceType"] == "DetectedIssue"]
    assert _rule_ids(on_cards) == _rule_ids(in_bundle) == sorted(r for r, _, _ in expected)


def test_intrathecal_demo_fills_the_form_in_micrograms(browser, live):
    pick_demo(browser, live.base, "6-intrathecal-pump")
    assert cards(browser) == {}
    assert browser.find_element(By.ID, "dose").get_attribute("value") == "330"
    for field, value in (("unit", "ug"), ("frequency", "continuous"), ("route", "intrathecal")):
        assert Select(browser.find_element(By.ID, field)).first_selected_option \
            .get_attribute("value") == value
    set_value(browser.find_element(By.ID, "dose"), "500")
    browser.find_element(By.ID, "check").click()
    status_done(browser)
    card = cards(browser)["intrathecal.titration"]
    assert "card-warning" in (card.get_attribute("class") or "")
    detail = card.find_element(By.CSS_SELECTOR, ".detail").text
    assert "from 300 micrograms to 500 micrograms a day" in detail and "66.7%" in detail
    screenshot(browser, "try-intrathecal")


def test_pasted_parameters_fill_the_form_and_are_checked(browser, live):
    params = (Path(__file__).resolve().parents[2] / "fixtures" / "params-overdose.json")
    browser.get(live.base + "/")
    record = browser.find_element(By.ID, "record")
    browser.execute_script(
        "arguments[0].value = arguments[1];"
        "arguments[0].dispatchEvent(new Event('change'))", record, params.read_text())
    assert browser.find_element(By.ID, "dose").get_attribute("value") == "3"
    assert Select(browser.find_element(By.ID, "unit")).first_selected_option.text == "tablet(s)"
    assert Select(browser.find_element(By.ID, "frequency")).first_selected_option \
        .get_attribute("value") == "4"
    assert Select(browser.find_element(By.ID, "product")).first_selected_option \
        .get_attribute("value") == "baclofen 10 MG Oral Tablet"
    browser.find_element(By.ID, "check").click()
    status_done(browser)
    card = cards(browser)["oral.max-daily"]
    assert "card-critical" in (card.get_attribute("class") or "")
    assert card.find_element(By.CSS_SELECTOR, ".indicator").text == "CRITICAL"
    detail = card.find_element(By.CSS_SELECTOR, ".detail").text
    assert "120 mg/day" in detail and "80 mg/day" in detail
    screenshot(browser, "try-pasted-parameters")


def test_override_button_sends_feedback(browser, live):
    """Overriding a card from the page is recorded against that card's rule, with the reason."""
    pick_demo(browser, live.base, "5-older-opioid")
    card = cards(browser)["interaction.opioid"]
    before = {r["rule"]: r for r in
              requests.get(live.base + "/report", timeout=WAIT_S).json()["rules"]}
    Select(card.find_element(By.TAG_NAME, "select")).select_by_visible_text(
        "Dose directed by a specialist")
    card.find_element(By.CSS_SELECTOR, "button.override").click()
    said = wait(browser, lambda d: card.find_element(By.CSS_SELECTOR, ".override-box span").text,
                "the override to be sent")
    assert said.strip() == "Override recorded."
    after = {r["rule"]: r for r in
             requests.get(live.base + "/report", timeout=WAIT_S).json()["rules"]}
    old = before.get("interaction.opioid", {"overridden": 0})
    assert after["interaction.opioid"]["overridden"] == old["overridden"] + 1
    assert {"code": "specialist-directed", "display": "Dose directed by a specialist",
            "count": 1} in after["interaction.opioid"]["overrideReasons"]


def _paste(browser: WebDriver, body: dict[str, Any]) -> None:
    record = browser.find_element(By.ID, "record")
    browser.execute_script(
        "arguments[0].value = arguments[1];"
        "arguments[0].dispatchEvent(new Event('change'))", record, json.dumps(body))


@pytest.mark.parametrize(("timing", "shown", "note"), [
    ({"code": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-GTSAbbreviation",
                           "code": "BID"}]}}, "2", ""),
    ({"repeat": {"frequency": 1, "period": 6, "periodUnit": "h"}}, "4", ""),
    ({"repeat": {"frequency": 1, "period": 2, "periodUnit": "d"}}, "0.5", ""),
    ({}, "3", "The order's schedule could not be put in the form: choose how often before "
              "checking."),
], ids=["code-BID", "every-6-hours", "every-2-days", "none"])
def test_pasted_schedule_is_read_into_the_form(browser, live, timing, shown, note):
    params = json.loads((Path(__file__).resolve().parents[2] / "fixtures" /
                         "params-overdose.json").read_text())
    params["parameter"][0]["resource"]["dosageInstruction"][0]["timing"] = timing
    browser.get(live.base + "/")
    _paste(browser, params)
    assert Select(browser.find_element(By.ID, "frequency")).first_selected_option \
        .get_attribute("value") == shown
    form_note = browser.find_element(By.ID, "form-note")
    assert form_note.text == note and form_note.is_displayed() == bool(note)
    if shown == "0.5":
        # sent as a whole-number frequency (FHIR positiveInt): once every 2 days
        browser.find_element(By.ID, "check").click()
        status_done(browser)
        result = json.loads(browser.execute_script(
            "return document.getElementById('raw').textContent"))
        assert result["resourceType"] == "Bundle"


def test_pasted_markup_is_shown_as_text(browser, live):
    """A drug name holding HTML comes back inside a card's detail: it is shown as text."""
    bundle = requests.get(live.base + "/demo/5-older-opioid", timeout=WAIT_S).json()
    for entry in bundle["entry"]:
        res = entry["resource"]
        if res.get("id") == "pat-older-oxy":
            res["medicationCodeableConcept"]["text"] = (
                'oxycodone <img id="injected" src="x"> <b>bold</b>')
    browser.get(live.base + "/")
    record = browser.find_element(By.ID, "record")
    browser.execute_script("arguments[0].value = arguments[1]", record, json.dumps(bundle))
    browser.find_element(By.ID, "check").click()
    wait(browser, lambda d: "geriatric.cns-burden" in cards(d), "the CNS burden card")
    detail = cards(browser)["geriatric.cns-burden"].find_element(By.CSS_SELECTOR, ".detail")
    assert '<img id="injected" src="x">' in detail.text
    assert browser.find_elements(By.ID, "injected") == []
    assert detail.find_elements(By.TAG_NAME, "b") == []


def test_bad_record_is_said(browser, live):
    browser.get(live.base + "/")
    record = browser.find_element(By.ID, "record")
    set_value(record, '{"resourceType": "Bundle", "entry": []}')
    browser.find_element(By.ID, "check").click()
    problem = wait(browser, lambda d: d.find_element(By.ID, "auth-problem").is_displayed()
                   and d.find_element(By.ID, "auth-problem"), "the problem message")
    assert problem.text == "The patient record must hold exactly one Patient (it holds 0)."


def test_no_credentials_is_said_instead_of_failing(browser, live_auth):
    said = pick_demo(browser, live_auth.base, "2-crcl-40")
    assert said == "Not checked: authentication is on and this page has no credentials."
    problem = browser.find_element(By.ID, "auth-problem")
    assert problem.is_displayed()
    assert problem.text == ("Authentication is on and this page has no credentials: give a "
                            "bearer token for $check and a CDS Hooks JWT for the cards in the "
                            "Authentication box above.")
    assert "CDS_REQUIRE_JWT is on and no CDS Hooks JWT was given" in \
        browser.find_element(By.ID, "cards").text
    assert "API_REQUIRE_AUTH is on and no bearer token was given" in \
        browser.find_element(By.ID, "notes").text
    screenshot(browser, "try-auth-needed")
    # with the bearer token the FHIR check runs; the cards still need a JWT
    set_value(browser.find_element(By.ID, "token"), TOKEN)
    browser.find_element(By.ID, "check").click()
    wait(browser, lambda d: "0 DetectedIssues in the result Bundle" in
         d.find_element(By.ID, "notes").text, "the $check result")
    # a wrong token is refused by the service, and the page says so
    set_value(browser.find_element(By.ID, "token"), "not-the-token")
    browser.find_element(By.ID, "check").click()
    wait(browser, lambda d: "refused the call (401)" in d.find_element(By.ID, "notes").text,
         "the 401 message")


# --- rule browser ----------------------------------------------------------------------------

def test_rule_browser_lists_every_rule(page, live):
    browser = page
    browser.get(live.base + "/rules")
    kb = load()
    shown = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "article.rule .rule-id")]
    assert shown == list(kb.rules)
    assert browser.find_element(By.ID, "kb-version").text == kb.version
    article = browser.find_element(By.ID, "rule-oral.max-daily")
    assert "Per profile" in article.text
    source = article.find_element(By.CSS_SELECTOR, "dd a")
    assert source.get_attribute("href") == kb.rule("oral.max-daily").source_url
    screenshot(browser, "rules")
    no_console_errors(browser)


# --- alert report ----------------------------------------------------------------------------

def test_report_page_shows_counts_after_feedback(page, live):
    browser = page
    """Cards from a CDS call, feedback on them, then the report page's chart and table."""
    bundle = requests.get(live.base + "/demo/5-older-opioid", timeout=WAIT_S).json()
    resources = [e["resource"] for e in bundle["entry"]]
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    draft = next(r for r in resources if r.get("status") == "draft")
    others = [r for r in resources if r is not patient and r is not draft]
    call = {"hook": "order-sign", "hookInstance": "5c8a8f0e-3f57-4a2b-8b0e-7d2f0c6b9e41",
            "context": {"userId": "Practitioner/p1", "patientId": patient["id"],
                        "draftOrders": {"resourceType": "Bundle", "type": "collection",
                                        "entry": [{"resource": draft}]}},
            "prefetch": {"patient": patient,
                         "medicationRequests": {"resourceType": "Bundle", "type": "searchset",
                                                "entry": [{"resource": r} for r in others]}}}
    url = live.base + "/cds-services/baclofen-order-sign"
    got = requests.post(url, json=call, timeout=WAIT_S).json()["cards"]
    by_rule = {c["source"]["topic"]["code"]: c for c in got}
    when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    reason = {"system": "urn:baclofen-check:override-reason", "code": "will-monitor"}
    resp = requests.post(url + "/feedback", timeout=WAIT_S, json={"feedback": [
        {"card": by_rule["interaction.opioid"]["uuid"], "outcome": "overridden",
         "outcomeTimestamp": when, "overrideReason": {"reason": reason}},
        {"card": by_rule["geriatric.cns-burden"]["uuid"], "outcome": "accepted",
         "outcomeTimestamp": when},
    ]})
    assert resp.json() == {"received": 2, "joined": 2}
    expected = {row["rule"]: row for row in
                requests.get(live.base + "/report", timeout=WAIT_S).json()["rules"]}

    browser.get(live.base + "/alerts")
    status_done(browser)
    rows = {r.get_attribute("data-rule"): r
            for r in browser.find_elements(By.CSS_SELECTOR, "#report-body tr")}
    assert set(rows) == set(expected)
    opioid = rows["interaction.opioid"]
    numbers = [opioid.find_element(By.CSS_SELECTOR, f"td.{k}").text
               for k in ("fired", "accepted", "overridden")]
    row = expected["interaction.opioid"]
    assert numbers == [str(row["fired"]), str(row["accepted"]), str(row["overridden"])]
    assert row["overridden"] >= 1
    assert "Will monitor closely (1)" in opioid.text
    cns = rows["geriatric.cns-burden"]
    assert cns.find_element(By.CSS_SELECTOR, "td.accepted").text == \
        str(expected["geriatric.cns-burden"]["accepted"])
    assert expected["geriatric.cns-burden"]["accepted"] >= 1
    figure = browser.find_element(By.CSS_SELECTOR, '#chart figure[data-rule="interaction.opioid"]')
    assert figure.get_attribute("aria-label") == (
        f"interaction.opioid: fired {row['fired']}, accepted {row['accepted']}, "
        f"overridden {row['overridden']}")
    link = opioid.find_element(By.CSS_SELECTOR, "th a")
    assert link.get_attribute("href") == live.base + "/rules#rule-interaction.opioid"
    bar = figure.find_element(By.CSS_SELECTOR, ".bar.overridden")
    assert bar.size["width"] > 0
    screenshot(browser, "alerts")
    no_console_errors(browser)


def test_report_page_without_credentials_says_so(browser, live_auth):
    browser.get(live_auth.base + "/alerts")
    browser.execute_script("window.sessionStorage.clear()")
    browser.refresh()
    problem = wait(browser, lambda d: d.find_element(By.ID, "auth-problem").is_displayed()
                   and d.find_element(By.ID, "auth-problem"), "the credentials message")
    assert problem.text.startswith("Authentication is on (API_REQUIRE_AUTH) and this page has "
                                   "no credentials")
    set_value(browser.find_element(By.ID, "token"), TOKEN)
    browser.find_element(By.ID, "refresh").click()
    assert status_done(browser).startswith(f"Report for knowledge {load().version}")
    assert not browser.find_element(By.ID, "auth-problem").is_displayed()
