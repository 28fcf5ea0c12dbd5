"""The web page's chart-open flow in a real browser (Debian's Chromium): the record with the
form's order as an active order, reviewed by ``baclofen-patient-view``; a second chart open
within CDS_REPEAT_AFTER_H shows no card again. The override box sends a comment that the alert
report shows."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests.support.browser import (
    WAIT_S,
    Live,
    _serve,
    cards,
    no_console_errors,
    pick_demo,
    screenshot,
    set_value,
    status_done,
    wait,
)


def test_chart_open_shows_alerts_once(page, live):
    pick_demo(page, live.base, "5-older-opioid")
    set_value(page.find_element(By.ID, "dose"), "30")   # 30 mg three times a day
    page.find_element(By.ID, "open-chart").click()
    said = status_done(page)
    assert said.startswith("Chart opened.")
    shown = cards(page)
    assert "oral.max-single" in shown and "interaction.opioid" in shown
    assert page.find_elements(By.CSS_SELECTOR, "#cards .card-info") == []
    screenshot(page, "try-chart-open")
    # the same chart opened again: nothing new to show
    page.execute_script("document.getElementById('status').removeAttribute('data-state')")
    page.find_element(By.ID, "open-chart").click()
    assert status_done(page) == "Chart opened. 0 cards."
    assert "already shown" in page.find_element(By.ID, "no-cards").text
    no_console_errors(page)


def test_override_comment_reaches_the_report(page, live):
    pick_demo(page, live.base, "5-older-opioid")
    card = cards(page)["interaction.opioid"]
    Select(card.find_element(By.TAG_NAME, "select")).select_by_visible_text(
        "Will monitor closely")
    set_value(card.find_element(By.CSS_SELECTOR, "input.override-comment"),
              "sedation checked daily")
    card.find_element(By.CSS_SELECTOR, "button.override").click()
    said = wait(page, lambda d: card.find_element(
        By.CSS_SELECTOR, ".override-box span[role=status]").text, "the override to be sent")
    assert said.strip() == "Override recorded."
    report = requests.get(live.base + "/report", timeout=WAIT_S).json()
    row = next(r for r in report["rules"] if r["rule"] == "interaction.opioid")
    assert {"reason": "will-monitor", "display": "Will monitor closely",
            "comment": "sedation checked daily"} in row["overrideComments"]
    page.get(live.base + "/alerts")
    wait(page, lambda d: d.find_element(By.ID, "status").get_attribute("data-state") == "done",
         "the report to load")
    cell = page.find_element(By.CSS_SELECTOR, "tr[data-rule='interaction.opioid'] td.comments")
    assert "sedation checked daily" in cell.text
    screenshot(page, "alerts-comments")
    no_console_errors(page)


@pytest.fixture(scope="module")
def live_epic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """The app with the Epic card style for every caller (CDS_CLIENT_STYLE)."""
    yield from _serve({"API_REQUIRE_AUTH": False, "CDS_REQUIRE_JWT": False,
                       "CDS_CLIENT_STYLE": "epic"}, tmp_path_factory.mktemp("live-epic"))


def test_epic_style_cards_on_the_page(page, live_epic):
    """The Epic style's create suggestion fills the form; its delete suggestion has no button
    (nothing to put in the form); the rule id (in topic.display) still links to the rule."""
    pick_demo(page, live_epic.base, "2-crcl-40")
    set_value(page.find_element(By.ID, "dose"), "20")
    page.find_element(By.ID, "check").click()
    wait(page, lambda d: "renal.dose-band" in cards(d), "the renal card")
    status_done(page)
    card = cards(page)["renal.dose-band"]
    link = card.find_element(By.CSS_SELECTOR, ".source a[href*='/rules#']")
    assert link.get_attribute("href") == live_epic.base + "/rules#rule-renal.dose-band"
    buttons = card.find_elements(By.CSS_SELECTOR, "button.suggestion")
    assert len(buttons) == 1 and "40 mg/day" in buttons[0].text
    buttons[0].click()
    wait(page, lambda d: d.find_element(By.ID, "status").text.startswith("Applied: "),
         "the suggestion to be applied and checked again")
    status_done(page)
    assert "renal.dose-band" not in cards(page)
    screenshot(page, "try-epic-style")
    no_console_errors(page)
