"""The versioned knowledge data: every clinical number, code and source the rules use.

The YAML file next to this module is the single copy. It is read once per process, checked
and exposed read-only: ``Knowledge.typed`` holds one typed, frozen view per section
(``sections.py``), built when the file is loaded, so a broken file (a missing key, a value of
the wrong type, an unknown severity) fails at start-up with the key path of the bad value
(``knowledge: dosing.suggestion_step_mg: expected a number, got 'five'``). Numbers come out as
exact ``Fraction`` values so that a threshold compares exactly (a daily cap is not 79.99999
after a unit conversion).

``Knowledge.data`` (the raw YAML) still works for the readers not yet moved to the typed view.

Severities are data too: a rule's ``severity`` is the level it fires at, and its ``raise``
entries give a higher level when a number the rule measures passes a threshold
(``RuleSpec.grade``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from . import sections as s
from .checked import (
    KnowledgeError,
    build,
    entry,
    fail,
    frac,
    join,
    mapping,
    number,
    read,
    text,
    unread_keys,
)

KNOWLEDGE_FILE = "baclofen.yaml"
# The file ``load()`` reads; tests point it at a broken copy (then ``load.cache_clear()``).
KNOWLEDGE_PATH: Path | None = None
SEVERITIES = ("high", "moderate", "low")
_RANK = {name: len(SEVERITIES) - i for i, name in enumerate(SEVERITIES)}
# How a ``raise`` entry compares the measured number with its threshold.
COMPARISONS = {"above": ">", "at_least": ">=", "below": "<", "at_most": "<="}
# The keys of a rule entry that are not its numbers.
RULE_FIELDS = ("family", "title", "fires_when", "severity", "code", "source", "also", "raise")


def severity_level(value: Any, path: str) -> str:
    name = text(value, path)
    if name not in SEVERITIES:
        raise fail(path, f"unknown severity {name!r} (expected {', '.join(SEVERITIES)})")
    return name


@dataclass(frozen=True)
class Raise:
    """``to`` when the measure ``when`` compares (``op``) with the threshold: a number of the
    rule's own entry, or of the profile (``profile_key``); with no ``op`` the measure is a
    yes/no fact."""
    to: str
    when: str
    op: str | None = None
    value: Fraction | None = None
    profile_key: str | None = None

    def holds(self, measured: Fraction | int | bool | None, profile: Profile | None, rule_id: str
              ) -> bool:
        if measured is None or measured is False:
            return False
        if self.op is None:
            return measured is True
        if isinstance(measured, bool):
            raise KnowledgeError(f"rule {rule_id}: severity measure {self.when!r} is a number")
        if self.profile_key is not None:
            if profile is None:
                raise KnowledgeError(f"rule {rule_id}: severity of {self.when!r} needs the "
                                     f"profile")
            limit = profile.num(self.profile_key)
        else:
            assert self.value is not None
            limit = self.value
        return {"above": measured > limit, "at_least": measured >= limit,
                "below": measured < limit, "at_most": measured <= limit}[self.op]


@dataclass(frozen=True)
class RuleSpec:
    id: str
    family: str
    title: str
    fires_when: str
    severity: str                    # for people: the level and when it is raised
    code: str | None
    source_key: str
    source_url: str
    raw: Mapping[str, Any]
    level: str = "low"               # the level the rule fires at (``severity`` in the file)
    raises: tuple[Raise, ...] = ()
    numbers: Mapping[str, Fraction] = field(default_factory=dict)
    lists: Mapping[str, tuple[Fraction, ...]] = field(default_factory=dict)
    also: str | None = None

    def num(self, key: str) -> Fraction:
        try:
            return self.numbers[key]
        except KeyError as exc:
            raise KnowledgeError(f"rule {self.id} has no value {key!r}") from exc

    def numbers_of(self, key: str) -> tuple[Fraction, ...]:
        try:
            return self.lists[key]
        except KeyError as exc:
            raise KnowledgeError(f"rule {self.id} has no list {key!r}") from exc

    def thresholds(self) -> dict[str, Any]:
        return {k: v for k, v in self.raw.items() if k not in RULE_FIELDS}

    def grade(self, profile: Profile | None = None,
              **measured: Fraction | int | bool | None) -> str:
        """The severity of a finding of this rule: its level, raised by every ``raise`` entry
        whose measure (passed by name: ``daily_mg=...``; None when not measured) passes its
        threshold."""
        named = {r.when for r in self.raises}
        if set(measured) != named:
            raise KnowledgeError(f"rule {self.id} grades by {sorted(named)}, "
                                 f"not {sorted(measured)}")
        level = self.level
        for r in self.raises:
            if _RANK[r.to] > _RANK[level] and r.holds(measured[r.when], profile, self.id):
                level = r.to
        return level


@dataclass(frozen=True)
class Profile:
    name: str
    label: str
    raw: Mapping[str, Any]
    max_daily_mg: Fraction = Fraction(0)
    high_daily_mg: Fraction = Fraction(0)
    max_single_mg: Fraction = Fraction(0)
    pediatric_age_below: Fraction = Fraction(0)
    pediatric_mid_cap_age_below: Fraction = Fraction(0)
    numbers: Mapping[str, Fraction] = field(default_factory=dict)

    def num(self, key: str) -> Fraction:
        try:
            return self.numbers[key]
        except KeyError as exc:
            raise KnowledgeError(f"profile {self.name} has no value {key!r}") from exc


PROFILE_NUMBERS = ("max_daily_mg", "high_daily_mg", "max_single_mg", "pediatric_age_below",
                   "pediatric_mid_cap_age_below")


@dataclass(frozen=True)
class Sections:
    """The typed view of every section of the knowledge file."""
    version: str
    sources: Mapping[str, s.Source]
    codes: s.CodeDisplay
    recognition: s.Recognition
    units: s.Units
    timing: s.Timing
    dosing: s.Dosing
    patient_context: s.PatientContext
    history: s.History
    interactions: Mapping[str, s.InteractionClass]
    atc_ingredients: s.AtcIngredients
    brands: s.Brands
    cns_active: s.CnsActive
    severity_measures: Mapping[str, s.SeverityMeasure]


class Knowledge:
    """Read-only, checked view of the knowledge file (``typed``), and the raw data (``data``)."""

    def __init__(self, data: Mapping[str, Any]):
        data = mapping(data, "(file)")
        self.data = data
        typed = build(Sections, {k: v for k, v in data.items()
                                 if k not in {"profiles", "rules"}}, "")
        self.typed: Sections = typed
        _check_sources(typed)
        self.version: str = typed.version
        self.sources: Mapping[str, Mapping[str, str]] = data["sources"]
        self.code_system: str = typed.codes.system
        self.code_display: Mapping[str, str] = typed.codes.display
        self.recognition: Mapping[str, Any] = data["recognition"]
        self.units: Mapping[str, Any] = data["units"]
        self.period_unit_days: dict[str, Fraction] = dict(typed.timing.period_unit_days)
        self.timing_codes: dict[str, Fraction] = dict(typed.timing.codes_per_day)
        self.profiles: dict[str, Profile] = {
            name: _profile(str(name), p) for name, p in
            mapping(entry(data, "profiles", ""), "profiles").items()}
        if not self.profiles:
            raise fail("profiles", "no profile")
        self.rules: dict[str, RuleSpec] = {
            str(rule_id): _rule(self, str(rule_id), r)
            for rule_id, r in mapping(entry(data, "rules", ""), "rules").items()}
        for rule_id in typed.interactions:
            if rule_id not in self.rules:
                raise fail(join("interactions", rule_id), "not a rule of the rules section")
        self.interaction_classes: Mapping[str, Any] = data.get("interactions", {})

    def rule(self, rule_id: str) -> RuleSpec:
        try:
            return self.rules[rule_id]
        except KeyError as exc:
            raise KnowledgeError(f"unknown rule {rule_id}") from exc

    def profile(self, name: str) -> Profile:
        try:
            return self.profiles[name]
        except KeyError as exc:
            raise KnowledgeError(f"unknown profile {name}") from exc

    def unread_keys(self) -> list[str]:
        """Key paths of the file that no typed field reads (a key added without its field)."""
        return unread_keys(Sections, {k: v for k, v in self.data.items()
                                      if k not in {"profiles", "rules"}}, "")


def _check_sources(typed: Sections) -> None:
    """Every ``source`` names an entry of ``sources``; cross-references resolve."""
    cited = [("recognition.baclofen_brands_source", typed.recognition.baclofen_brands_source),
             ("patient_context.renal.ckd_stage_ml_min.source",
              typed.patient_context.renal.ckd_stage_ml_min.source),
             ("atc_ingredients.source", typed.atc_ingredients.source),
             ("brands.source", typed.brands.source), ("cns_active.source", typed.cns_active.source)]
    cited += [(join(join("interactions", k), "source"), c.source)
              for k, c in typed.interactions.items()]
    for path, key in cited:
        if key not in typed.sources:
            raise fail(path, f"unknown source {key!r}")
    units = typed.units
    for name in units.mass_aliases:
        if name not in units.mass_mg_per_unit:
            raise fail(join("units.mass_aliases", name), "not a unit of units.mass_mg_per_unit")
    for alias, period in units.period_aliases.items():
        if period not in typed.timing.period_unit_days:
            raise fail(join("units.period_aliases", alias),
                       f"{period!r} is not a unit of timing.period_unit_days")
    for name, members in typed.cns_active.classes.items():
        if isinstance(members, str):
            ref = members.removeprefix("from ").strip()
            if not members.startswith("from ") or ref not in typed.interactions:
                raise fail(join("cns_active.classes", name),
                           "expected a list of ingredients or 'from <interaction rule id>'")


def _profile(name: str, raw: Any) -> Profile:
    path = join("profiles", name)
    data = mapping(raw, path)
    numbers = {str(k): number(v, join(path, k)) for k, v in data.items() if k != "label"}
    for key in PROFILE_NUMBERS:
        if key not in numbers:
            raise fail(join(path, key), "missing")
    label = text(data.get("label", name), join(path, "label"))
    return Profile(name, label, data, **{k: numbers[k] for k in PROFILE_NUMBERS},
                   numbers=numbers)


def _rule(kb: Knowledge, rule_id: str, raw: Any) -> RuleSpec:
    path = join("rules", rule_id)
    r = mapping(raw, path)
    source_key = text(entry(r, "source", path), join(path, "source"))
    if source_key not in kb.typed.sources:
        raise fail(join(path, "source"), f"unknown source {source_key!r}")
    also = read(str | None, r.get("also"), join(path, "also"))
    if also is not None and also not in kb.typed.sources:
        raise fail(join(path, "also"), f"unknown source {also!r}")
    code = read(str | None, entry(r, "code", path), join(path, "code"))
    if code is not None and code not in kb.code_display:
        raise fail(join(path, "code"), f"unknown code {code!r}")
    numbers: dict[str, Fraction] = {}
    lists: dict[str, tuple[Fraction, ...]] = {}
    for key, value in r.items():
        if key in RULE_FIELDS:
            continue
        if isinstance(value, list):
            lists[str(key)] = read(tuple[Fraction, ...], value, join(path, key))
        else:
            numbers[str(key)] = number(value, join(path, key))
    level = severity_level(entry(r, "severity", path), join(path, "severity"))
    raises = tuple(_raise(kb, r.get("raise") or [], numbers, path, level))
    return RuleSpec(
        id=rule_id,
        family=text(entry(r, "family", path), join(path, "family")),
        title=text(entry(r, "title", path), join(path, "title")),
        fires_when=text(entry(r, "fires_when", path), join(path, "fires_when")),
        severity=_severity_text(kb, level, raises, numbers, path),
        code=code,
        source_key=source_key,
        source_url=kb.typed.sources[source_key].url,
        raw=r,
        level=level,
        raises=raises,
        numbers=numbers,
        lists=lists,
        also=also,
    )


def _raise(kb: Knowledge, raw: Any, numbers: Mapping[str, Fraction], path: str, level: str
           ) -> list[Raise]:
    if not isinstance(raw, list):
        raise fail(join(path, "raise"), f"expected a list, got {raw!r}")
    out = []
    for i, item in enumerate(raw):
        at = f"{join(path, 'raise')}[{i}]"
        r = mapping(item, at)
        to = severity_level(entry(r, "to", at), join(at, "to"))
        if _RANK[to] <= _RANK[level]:
            raise fail(join(at, "to"), f"{to!r} is not above the rule's severity {level!r}")
        when = text(entry(r, "when", at), join(at, "when"))
        if when not in kb.typed.severity_measures:
            raise fail(join(at, "when"), f"unknown measure {when!r} (not in severity_measures)")
        ops = [op for op in COMPARISONS if op in r]
        extra = set(r) - {"to", "when", *COMPARISONS}
        if len(ops) > 1 or extra:
            raise fail(at, "expected to, when and at most one of " + ", ".join(COMPARISONS))
        if not ops:
            out.append(Raise(to, when))
            continue
        op = ops[0]
        limit = r[op]
        if isinstance(limit, str) and limit.startswith("profile."):
            key = limit.removeprefix("profile.")
            for profile in kb.profiles.values():
                if key not in profile.numbers:
                    raise fail(join(at, op), f"profile {profile.name} has no value {key!r}")
            out.append(Raise(to, when, op, profile_key=key))
        elif isinstance(limit, str) and not _is_number(limit):
            if limit not in numbers:
                raise fail(join(at, op), f"{limit!r} is not a number of this rule")
            out.append(Raise(to, when, op, value=numbers[limit]))
        else:
            out.append(Raise(to, when, op, value=number(limit, join(at, op))))
    return out


def _is_number(value: str) -> bool:
    try:
        frac(value)
    except (KnowledgeError, ZeroDivisionError):
        return False
    return True


def _severity_text(kb: Knowledge, level: str, raises: tuple[Raise, ...],
                   numbers: Mapping[str, Fraction], path: str) -> str:
    """For people: ``moderate; high when the daily dose > X mg/day (us), Y mg/day (uk)``; a yes/no
    measure's text may name numbers of the rule (``{older_age}``)."""
    by_level: dict[str, list[str]] = {}
    for i, r in enumerate(raises):
        measure = kb.typed.severity_measures[r.when]
        if r.op is None:
            try:
                said = measure.text.format_map({k: _fmt(v) for k, v in numbers.items()})
            except (KeyError, ValueError) as exc:
                raise fail(join(f"{join(path, 'raise')}[{i}]", "when"),
                           f"measure {r.when!r} names {exc} that is not a number of this "
                           f"rule") from None
            by_level.setdefault(r.to, []).append(said)
            continue
        unit = f" {measure.unit}" if measure.unit else ""
        if r.profile_key is not None:
            limit = ", ".join(f"{_fmt(p.num(r.profile_key))}{unit} ({p.name})"
                              for p in kb.profiles.values())
        else:
            assert r.value is not None
            limit = f"{_fmt(r.value)}{unit}"
        by_level.setdefault(r.to, []).append(f"{measure.text} {COMPARISONS[r.op]} {limit}")
    return "; ".join([level] + [f"{to} when {' or '.join(why)}" for to, why in by_level.items()])


def _fmt(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    return f"{float(value):g}"


def load_file(path: Path) -> Knowledge:
    """The knowledge of a file, checked (a broken file raises KnowledgeError naming the key)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise KnowledgeError(f"knowledge: {path.name} is not valid YAML: {exc}") from None
    return Knowledge(data)


@cache
def load() -> Knowledge:
    """The process's knowledge: the shipped file (or ``KNOWLEDGE_PATH``), read and checked
    once. Only the entry points call it (create_app, the CLI); below them it is passed in."""
    if KNOWLEDGE_PATH is not None:
        return load_file(KNOWLEDGE_PATH)
    with resources.as_file(resources.files(__package__).joinpath(KNOWLEDGE_FILE)) as path:
        return load_file(path)


__all__ = ["COMPARISONS", "Knowledge", "KnowledgeError", "Profile", "Raise", "RuleSpec",
           "SEVERITIES", "Sections", "frac", "load", "load_file", "recognition_rows",
           "rule_knowledge"]


# --- what the rules read beyond their own entries (the rules page and `baclofen-check rules`)

def recognition_rows(kb: Knowledge) -> list[tuple[str, str]]:
    """How an order is recognised as baclofen and its route decided (clinical-rules section 1)."""
    rec = kb.typed.recognition
    rows = [("RxNorm", ", ".join(rec.baclofen_rxnorm)
             + (", products " + ", ".join(rec.baclofen_product_rxnorm)
                if rec.baclofen_product_rxnorm else "")),
            ("ATC", ", ".join(rec.baclofen_atc)),
            ("names", ", ".join((rec.baclofen_word, *rec.baclofen_brands))
             + " (at the start of a word; digits may follow)"),
            ("intrathecal brands", ", ".join(rec.intrathecal_brands))]
    return [(k, v) for k, v in rows if v]


def _brands_of(kb: Knowledge, ingredients: set[str]) -> str:
    return ", ".join(f"{b} ({' + '.join(i)})" for b, i in kb.typed.brands.names.items()
                     if ingredients & set(i))


def _atc_of(kb: Knowledge, ingredients: set[str]) -> str:
    return ", ".join(f"{c} {i}" for c, i in kb.typed.atc_ingredients.codes.items()
                     if i in ingredients)


def rule_knowledge(kb: Knowledge, rule_id: str) -> list[tuple[str, str]]:
    """Code lists, brand tables, ATC groups and equations a rule reads outside its own entry."""
    typed = kb.typed
    pc = typed.patient_context
    rows: list[tuple[str, str]] = []
    cls = typed.interactions.get(rule_id)
    if cls is not None:
        ingredients = set(cls.ingredients)
        if cls.atc_prefixes:
            own = ", ".join(typed.recognition.baclofen_atc)
            rows.append(("ATC groups", ", ".join(cls.atc_prefixes) + (
                f" (baclofen, {own}, excepted)"
                if any(code.startswith(p) for p in cls.atc_prefixes
                       for code in typed.recognition.baclofen_atc) else "")))
        rows += [(k, v) for k, v in (("ATC codes", _atc_of(kb, ingredients)),
                                     ("brands", _brands_of(kb, ingredients))) if v]
    if rule_id == "geriatric.cns-burden":
        rows += [("ATC groups", f"{name}: {', '.join(v)}")
                 for name, v in typed.cns_active.atc_prefixes.items()]
        rows.append(("counting", "by ingredient: one ingredient in two orders is one drug"))
    renal = pc.renal
    if rule_id.startswith("renal.") or rule_id == "geriatric.renal":
        epi, sch, n = renal.ckd_epi_2021, renal.bedside_schwartz, _fmt
        rows.append(("CKD-EPI 2021", (
            f"adults without a weight: {n(epi.constant)} x min(SCr/k, 1)^a x max(SCr/k, "
            f"1)^{n(epi.exponent_above)} x {n(epi.age_base)}^age (x {n(epi.female_factor)} "
            f"women); k {n(epi.kappa_female)}/{n(epi.kappa_male)}, a "
            f"{n(epi.alpha_female)}/{n(epi.alpha_male)} (women/men) (S45)")))
        rows.append(("bedside Schwartz", (
            f"children {n(sch.age_from)} to < {n(sch.age_below)} years with a height: "
            f"{n(sch.k)} x height_cm / SCr_mg_dL (S46)")))
        stages = renal.ckd_stage_ml_min
        rows.append(("CKD stages", "; ".join(
            f"{k} {n(v)}" for k, v in {**stages.icd10, **stages.snomed}.items())
            + f" mL/min (no renal value within {n(renal.max_age_days)} days)"))
        dialysis = pc.dialysis
        rows.append(("dialysis/ESRD", (
            f"ICD-10-CM {', '.join(dialysis.icd10)}; SNOMED "
            f"{', '.join(dialysis.snomed)}; procedures "
            f"{', '.join(dialysis.procedure_snomed)} within "
            f"{n(dialysis.procedure_max_age_days)} days or ongoing")))
        rows.append(("kidney transplant", _codes_text(pc.kidney_transplant) + ": ESRD and "
                     "dialysis Conditions before it no longer count"))
    if rule_id == "lactation":
        bf = pc.breastfeeding
        rows.append(("breastfeeding", _codes_text(bf) + f"; Observations within "
                     f"{_fmt(bf.observation_max_age_days)} days"))
    if rule_id == "interaction.alcohol":
        aud = pc.alcohol_use_disorder
        rows.append(("alcohol use disorder", _codes_text(s.ConditionCodes(
            (f"{aud.icd10_prefix}.* except {', '.join(aud.icd10_remission)}",), aud.snomed,
            aud.words))))
    return rows


def _codes_text(spec: s.ConditionCodes) -> str:
    """ "ICD-10-CM ...; SNOMED ...; text ..." of a code-list entry of the knowledge file."""
    return (f"ICD-10-CM {', '.join(spec.icd10)}; SNOMED {', '.join(spec.snomed)}; text "
            f"{', '.join(spec.words)}")
