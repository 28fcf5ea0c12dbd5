"""The versioned knowledge data: every clinical number, code and source the rules use.

The YAML file next to this module is the single copy. It is loaded once per process and
exposed read-only; numbers come out as exact ``Fraction`` values so that a threshold compares
exactly (80 mg/day is not 79.99999 after a unit conversion).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from functools import cache, lru_cache
from importlib import resources
from typing import Any

import yaml

KNOWLEDGE_FILE = "baclofen.yaml"
SEVERITIES = ("high", "moderate", "low")


class KnowledgeError(RuntimeError):
    """The knowledge file is missing something a rule needs."""


def frac(value: Any) -> Fraction:
    """An exact number from a YAML scalar: int, float (by its shortest repr) or "a/b" string."""
    if isinstance(value, Fraction):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise KnowledgeError(f"not a number: {value!r}")
    return _frac(value)


@lru_cache(maxsize=4096, typed=True)
def _frac(value: int | float | str) -> Fraction:
    """frac of a scalar, once per value: the rules read the same knowledge numbers on every
    check, and making a Fraction from a float's text costs more than the rule using it."""
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        return Fraction(repr(value))
    try:
        return Fraction(value.strip())
    except ValueError:
        raise KnowledgeError(f"not a number: {value!r}") from None


@dataclass(frozen=True)
class RuleSpec:
    id: str
    family: str
    title: str
    fires_when: str
    severity: str
    code: str | None
    source_key: str
    source_url: str
    raw: Mapping[str, Any]

    def num(self, key: str) -> Fraction:
        try:
            return frac(self.raw[key])
        except KeyError as exc:
            raise KnowledgeError(f"rule {self.id} has no value {key!r}") from exc

    def thresholds(self) -> dict[str, Any]:
        skip = {"family", "title", "fires_when", "severity", "code", "source", "also"}
        return {k: v for k, v in self.raw.items() if k not in skip}


@dataclass(frozen=True)
class Profile:
    name: str
    label: str
    raw: Mapping[str, Any]

    def num(self, key: str) -> Fraction:
        try:
            return frac(self.raw[key])
        except KeyError as exc:
            raise KnowledgeError(f"profile {self.name} has no value {key!r}") from exc


class Knowledge:
    """Read-only view of the knowledge file."""

    def __init__(self, data: Mapping[str, Any]):
        self.data = data
        self.version: str = str(data["version"])
        self.sources: Mapping[str, Mapping[str, str]] = data["sources"]
        self.code_system: str = data["codes"]["system"]
        self.code_display: Mapping[str, str] = data["codes"]["display"]
        self.recognition: Mapping[str, Any] = data["recognition"]
        self.units: Mapping[str, Any] = data["units"]
        self.period_unit_days: dict[str, Fraction] = {
            k: frac(v) for k, v in data["timing"]["period_unit_days"].items()
        }
        self.timing_codes: dict[str, Fraction] = {
            k: frac(v) for k, v in data["timing"]["codes_per_day"].items()
        }
        self.profiles: dict[str, Profile] = {
            name: Profile(name, str(p.get("label", name)), p)
            for name, p in data["profiles"].items()
        }
        self.rules: dict[str, RuleSpec] = {}
        for rule_id, r in data["rules"].items():
            source_key = str(r["source"])
            if source_key not in self.sources:
                raise KnowledgeError(f"rule {rule_id} cites unknown source {source_key}")
            code = r.get("code")
            if code is not None and code not in self.code_display:
                raise KnowledgeError(f"rule {rule_id} uses unknown code {code}")
            self.rules[rule_id] = RuleSpec(
                id=rule_id,
                family=str(r["family"]),
                title=str(r["title"]),
                fires_when=str(r["fires_when"]),
                severity=str(r["severity"]),
                code=code,
                source_key=source_key,
                source_url=str(self.sources[source_key]["url"]),
                raw=r,
            )
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


@cache
def load() -> Knowledge:
    text = resources.files(__package__).joinpath(KNOWLEDGE_FILE).read_text(encoding="utf-8")
    return Knowledge(yaml.safe_load(text))


# --- what the rules read beyond their own entries (the rules page and `baclofen-check rules`)

def recognition_rows(kb: Knowledge) -> list[tuple[str, str]]:
    """How an order is recognised as baclofen and its route decided (clinical-rules section 1)."""
    rec = kb.recognition
    rows = [("RxNorm", ", ".join(str(c) for c in rec["baclofen_rxnorm"])
             + (", products " + ", ".join(str(c) for c in rec["baclofen_product_rxnorm"])
                if rec.get("baclofen_product_rxnorm") else "")),
            ("ATC", ", ".join(str(c) for c in rec.get("baclofen_atc", []))),
            ("names", ", ".join([str(rec["baclofen_word"])]
                                + [str(b) for b in rec.get("baclofen_brands", [])])
             + " (at the start of a word; digits may follow)"),
            ("intrathecal brands", ", ".join(str(b) for b in rec.get("intrathecal_brands", [])))]
    return [(k, v) for k, v in rows if v]


def _brands_of(kb: Knowledge, ingredients: set[str]) -> str:
    brands = (kb.data.get("brands") or {}).get("names", {})
    return ", ".join(f"{b} ({' + '.join(i)})" for b, i in brands.items()
                     if ingredients & {str(x) for x in i})


def _atc_of(kb: Knowledge, ingredients: set[str]) -> str:
    codes = (kb.data.get("atc_ingredients") or {}).get("codes", {})
    return ", ".join(f"{c} {i}" for c, i in codes.items() if str(i) in ingredients)


def rule_knowledge(kb: Knowledge, rule_id: str) -> list[tuple[str, str]]:
    """Code lists, brand tables, ATC groups and equations a rule reads outside its own entry."""
    pc = kb.data.get("patient_context", {})
    rows: list[tuple[str, str]] = []
    cls = kb.interaction_classes.get(rule_id)
    if cls:
        ingredients = {str(i) for i in cls.get("ingredients", [])}
        if cls.get("atc_prefixes"):
            prefixes = [str(p) for p in cls["atc_prefixes"]]
            rows.append(("ATC groups", ", ".join(prefixes) + (
                " (baclofen, M03BX01, excepted)" if any(p.startswith("M03") for p in prefixes)
                else "")))
        rows += [(k, v) for k, v in (("ATC codes", _atc_of(kb, ingredients)),
                                     ("brands", _brands_of(kb, ingredients))) if v]
    if rule_id == "geriatric.cns-burden":
        groups: Mapping[str, Any] = kb.data["cns_active"].get("atc_prefixes") or {}
        rows += [("ATC groups", f"{name}: {', '.join(str(p) for p in v)}")
                 for name, v in groups.items()]
        rows.append(("counting", "by ingredient: one ingredient in two orders is one drug"))
    renal = pc.get("renal", {})
    if rule_id.startswith("renal.") or rule_id == "geriatric.renal":
        epi, sch = renal.get("ckd_epi_2021"), renal.get("bedside_schwartz")
        if epi:
            rows.append(("CKD-EPI 2021", (
                f"adults without a weight: {epi['constant']} x min(SCr/k, 1)^a x max(SCr/k, "
                f"1)^{epi['exponent_above']} x {epi['age_base']}^age (x {epi['female_factor']} "
                f"women); k {epi['kappa_female']}/{epi['kappa_male']}, a "
                f"{epi['alpha_female']}/{epi['alpha_male']} (women/men) (S45)")))
        if sch:
            rows.append(("bedside Schwartz", (
                f"children {sch['age_from']} to < {sch['age_below']} years with a height: "
                f"{sch['k']} x height_cm / SCr_mg_dL (S46)")))
        stages = renal.get("ckd_stage_ml_min")
        if stages:
            rows.append(("CKD stages", "; ".join(
                f"{k} {v}" for k, v in {**stages["icd10"], **stages["snomed"]}.items())
                + " mL/min (no renal value within 365 days)"))
        dialysis, tx = pc.get("dialysis", {}), pc.get("kidney_transplant", {})
        if dialysis:
            rows.append(("dialysis/ESRD", (
                f"ICD-10-CM {', '.join(dialysis['icd10'])}; SNOMED "
                f"{', '.join(dialysis['snomed'])}; procedures "
                f"{', '.join(dialysis['procedure_snomed'])} within "
                f"{dialysis['procedure_max_age_days']} days or ongoing")))
        if tx:
            rows.append(("kidney transplant", _codes_text(tx) + ": ESRD and dialysis "
                         "Conditions before it no longer count"))
    if rule_id == "lactation" and pc.get("breastfeeding"):
        bf = pc["breastfeeding"]
        rows.append(("breastfeeding", _codes_text(bf) + f"; Observations within "
                     f"{bf['observation_max_age_days']} days"))
    if rule_id == "interaction.alcohol" and pc.get("alcohol_use_disorder"):
        aud = pc["alcohol_use_disorder"]
        rows.append(("alcohol use disorder", _codes_text({
            **aud, "icd10": [f"{aud['icd10_prefix']}.* except "
                             f"{', '.join(aud['icd10_remission'])}"]})))
    return rows


def _codes_text(spec: Mapping[str, Any]) -> str:
    """ "ICD-10-CM ...; SNOMED ...; text ..." of a code-list entry of the knowledge file."""
    return (f"ICD-10-CM {', '.join(spec['icd10'])}; SNOMED {', '.join(spec['snomed'])}; text "
            f"{', '.join(spec['words'])}")
