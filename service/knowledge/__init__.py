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
