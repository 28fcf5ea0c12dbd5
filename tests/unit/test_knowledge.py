"""The knowledge file's typed view: checked at load, at create_app and at the CLI's start.

A broken file (a missing key, a threshold of the wrong type, an unknown severity) fails with
the key path of the bad value; the shipped file validates, every key is read by a typed
field, and the typed values equal the raw ones.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml

import service.knowledge as knowledge
from service import create_app
from service.cli import main
from service.knowledge import Knowledge, KnowledgeError, frac, load

SHIPPED = Path(knowledge.__file__).with_name(knowledge.KNOWLEDGE_FILE)


def shipped_data() -> dict[str, Any]:
    data = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda section: section.pop(key)


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda section: section.__setitem__(key, value)


# (where, what is done there, the message naming it)
BROKEN = [
    (("dosing",), _drop("suggestion_step_mg"),
     "knowledge: dosing.suggestion_step_mg: missing"),
    (("dosing",), _set("suggestion_step_mg", "five"),
     "knowledge: dosing.suggestion_step_mg: expected a number, got 'five'"),
    (("patient_context", "renal"), _drop("esrd_below"),
     "knowledge: patient_context.renal.esrd_below: missing"),
    (("patient_context", "renal", "cockcroft_gault"), _set("divisor", [72]),
     "knowledge: patient_context.renal.cockcroft_gault.divisor: expected a number, got [72]"),
    (("recognition",), _set("baclofen_rxnorm", [1292]),
     "knowledge: recognition.baclofen_rxnorm[0]: expected text, got 1292"),
    (("rules", "pediatric.age-cap"), _set("high_margin_mg", "twenty"),
     "knowledge: rules[pediatric.age-cap].high_margin_mg: expected a number, got 'twenty'"),
    (("rules", "oral.max-single"), _set("severity", "severe"),
     "knowledge: rules[oral.max-single].severity: unknown severity 'severe' (expected high, "
     "moderate, low)"),
    (("rules", "renal.dialysis"), _drop("severity"),
     "knowledge: rules[renal.dialysis].severity: missing"),
    (("rules", "renal.dialysis"), _drop("high_above_mg_day"),
     "knowledge: rules[renal.dialysis].raise[0].above: 'high_above_mg_day' is not a number of "
     "this rule"),
    (("rules", "renal.dialysis"), _set("raise", [{"to": "highest", "when": "daily_mg"}]),
     "knowledge: rules[renal.dialysis].raise[0].to: unknown severity 'highest'"),
    (("rules", "renal.dialysis"), _set("raise", [{"to": "high", "when": "dose"}]),
     "knowledge: rules[renal.dialysis].raise[0].when: unknown measure 'dose'"),
    (("rules", "renal.dialysis"), _set("source", "S99"),
     "knowledge: rules[renal.dialysis].source: unknown source 'S99'"),
    (("profiles", "uk"), _drop("high_daily_mg"),
     "knowledge: profiles.uk.high_daily_mg: missing"),
    (("profiles", "us"), _set("max_daily_mg", "eighty"),
     "knowledge: profiles.us.max_daily_mg: expected a number, got 'eighty'"),
]
BROKEN_IDS = ["missing-key", "number-as-text", "missing-nested", "number-as-list",
              "code-as-number", "threshold-as-text", "unknown-severity", "no-severity",
              "raise-without-its-threshold", "raise-to-unknown-severity",
              "raise-by-unknown-measure", "unknown-source", "profile-missing-value",
              "profile-value-as-text"]


def broken_data(where: tuple[str, ...], change: Callable[[dict[str, Any]], None]
                ) -> dict[str, Any]:
    data = copy.deepcopy(shipped_data())
    section = data
    for key in where:
        section = section[key]
    change(section)
    return data


@pytest.fixture
def knowledge_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of the knowledge file that ``load()`` reads instead of the shipped one."""
    path = tmp_path / "baclofen.yaml"
    monkeypatch.setattr(knowledge, "KNOWLEDGE_PATH", path)
    load.cache_clear()
    yield path
    monkeypatch.undo()
    load.cache_clear()   # the next load() reads the shipped file again


@pytest.mark.parametrize(("where", "change", "message"), BROKEN, ids=BROKEN_IDS)
def test_a_broken_file_fails_to_load_naming_the_key(where, change, message) -> None:
    with pytest.raises(KnowledgeError) as caught:
        Knowledge(broken_data(where, change))
    assert str(caught.value).startswith(message), str(caught.value)


AT_START = [0, 5, 6]   # a missing key, a severity threshold as text, an unknown severity


@pytest.mark.parametrize(("where", "change", "message"), [BROKEN[i] for i in AT_START],
                         ids=[BROKEN_IDS[i] for i in AT_START])
def test_a_broken_file_fails_create_app(knowledge_file, tmp_path, where, change, message
                                        ) -> None:
    knowledge_file.write_text(yaml.safe_dump(broken_data(where, change)), encoding="utf-8")
    with pytest.raises(KnowledgeError) as caught:
        create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/audit.sqlite3", "TESTING": True})
    assert str(caught.value).startswith(message)


def test_a_broken_file_stops_the_cli_with_the_key_and_exit_2(knowledge_file, capsys) -> None:
    where, change, message = BROKEN[5]
    knowledge_file.write_text(yaml.safe_dump(broken_data(where, change)), encoding="utf-8")
    assert main(["rules"]) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert "Traceback" not in captured.err and captured.out == ""


def test_a_file_that_is_not_yaml_is_named(knowledge_file) -> None:
    knowledge_file.write_text("dosing: [unclosed\n", encoding="utf-8")
    with pytest.raises(KnowledgeError, match="baclofen.yaml is not valid YAML"):
        load()


def test_the_shipped_file_validates_and_every_key_has_a_typed_field() -> None:
    kb = Knowledge(shipped_data())
    assert kb.unread_keys() == []
    assert kb.version == str(shipped_data()["version"])


def test_the_typed_view_equals_the_raw_data() -> None:
    kb = load()
    raw, typed = kb.data, kb.typed
    assert typed.dosing.suggestion_step_mg == frac(raw["dosing"]["suggestion_step_mg"])
    assert typed.dosing.usual_doses_per_day == tuple(
        Fraction(n) for n in raw["dosing"]["usual_doses_per_day"])
    renal = raw["patient_context"]["renal"]
    assert typed.patient_context.renal.esrd_below == frac(renal["esrd_below"])
    assert typed.patient_context.renal.cap_fraction == {
        k: frac(v) for k, v in renal["cap_fraction"].items()}
    assert typed.patient_context.renal.ckd_epi_2021.alpha_male == frac(
        renal["ckd_epi_2021"]["alpha_male"])
    assert typed.recognition.baclofen_rxnorm == tuple(raw["recognition"]["baclofen_rxnorm"])
    assert typed.timing.codes_per_day["Q8H"] == Fraction(3)
    assert typed.sources["S1"].url == raw["sources"]["S1"]["url"]
    assert typed.brands.names["percocet"] == ("oxycodone", "acetaminophen")
    assert typed.interactions["interaction.opioid"].ingredients == tuple(
        raw["interactions"]["interaction.opioid"]["ingredients"])
    assert kb.profile("uk").max_daily_mg == frac(raw["profiles"]["uk"]["max_daily_mg"])
    assert kb.rule("pediatric.age-cap").num("high_margin_mg") == frac(
        raw["rules"]["pediatric.age-cap"]["high_margin_mg"])


def test_the_typed_view_is_read_only() -> None:
    typed = load().typed
    with pytest.raises(AttributeError):
        typed.dosing.suggestion_step_mg = Fraction(5)  # type: ignore[misc]
    with pytest.raises(TypeError):
        typed.timing.codes_per_day["QD"] = Fraction(2)  # type: ignore[index]


# --- severities are data: the levels the rule table gives, at and around each threshold ------

@pytest.mark.parametrize(("rule_id", "profile", "measured", "severity"), [
    ("oral.max-daily", "us", {"daily_mg": 100}, "moderate"),
    ("oral.max-daily", "us", {"daily_mg": Fraction(1001, 10)}, "high"),
    ("oral.max-daily", "uk", {"daily_mg": 120}, "moderate"),
    ("oral.max-daily", "uk", {"daily_mg": 121}, "high"),
    ("pediatric.age-cap", None, {"over_cap_mg_day": 20}, "moderate"),
    ("pediatric.age-cap", None, {"over_cap_mg_day": 21}, "high"),
    ("renal.dose-band", None, {"severe_band_daily_mg": None}, "moderate"),
    ("renal.dose-band", None, {"severe_band_daily_mg": 20}, "high"),
    ("geriatric.renal", None, {"daily_mg": 10, "renal_ml_min": 30}, "moderate"),
    ("geriatric.renal", None, {"daily_mg": 10, "renal_ml_min": Fraction(299, 10)}, "high"),
    ("geriatric.renal", None, {"daily_mg": None, "renal_ml_min": 45}, "moderate"),
    ("oral.start-dose", None, {"daily_mg": 30, "mg_kg_day": None, "vulnerable": False},
     "low"),
    ("oral.start-dose", None, {"daily_mg": None, "mg_kg_day": Fraction(7, 10),
                               "vulnerable": False}, "moderate"),
    ("oral.start-dose", None, {"daily_mg": 20, "mg_kg_day": None, "vulnerable": True},
     "moderate"),
    ("withdrawal.short-taper", None, {"taper_days": 7}, "low"),
    ("withdrawal.short-taper", None, {"taper_days": 6}, "moderate"),
    ("intrathecal.abrupt-stop", None, {"stopped": True}, "high"),
    ("intrathecal.abrupt-stop", None, {"stopped": False}, "moderate"),
    ("interaction.antihypertensive", None, {}, "low"),
])
def test_grade_gives_the_rule_tables_severities(rule_id, profile, measured, severity) -> None:
    kb = load()
    spec = kb.rule(rule_id)
    assert spec.grade(kb.profile(profile) if profile else None, **measured) == severity


def test_grade_needs_exactly_the_measures_the_file_names() -> None:
    spec = load().rule("renal.dialysis")
    with pytest.raises(KnowledgeError, match="grades by"):
        spec.grade(daily_ug=5)
    with pytest.raises(KnowledgeError, match="grades by"):
        spec.grade()


def test_a_severity_threshold_in_the_file_decides() -> None:
    data = broken_data(("rules", "pediatric.age-cap"), _set("high_margin_mg", 5))
    spec = Knowledge(data).rule("pediatric.age-cap")
    assert spec.grade(over_cap_mg_day=6) == "high"
    assert spec.grade(over_cap_mg_day=5) == "moderate"


def test_the_rules_page_text_says_the_levels_and_thresholds() -> None:
    kb = load()
    assert kb.rule("oral.max-daily").severity == (
        "moderate; high when the daily dose > 100 mg/day (us), 120 mg/day (uk)")
    assert kb.rule("oral.max-single").severity == "moderate"
    assert "age >= 65" in kb.rule("oral.start-dose").severity
