"""Units of a dose and of time, as arithmetic: unit words to their kind, amounts to mg, periods
to days. Pure: unit texts and exact numbers in, exact numbers out; every word and factor comes
from the knowledge file (``units``, ``timing``)."""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

from ..knowledge import Knowledge

UnitKind = tuple[str, str]
"""('mass', 'mg'|'g'|'ug') | ('volume', 'mL') | ('count', 'count')."""


class UnitTable:
    """Unit words and codes from the knowledge data, looked up case-insensitively."""

    def __init__(self, kb: Knowledge):
        units = kb.typed.units
        self.mass: dict[str, str] = {}
        for canonical, aliases in units.mass_aliases.items():
            for alias in aliases:
                self.mass[alias.lower()] = canonical
        self.mass_factor = dict(units.mass_mg_per_unit)
        self.volume = {a.lower() for a in units.volume_aliases}
        self.count = {a.lower() for a in units.count_aliases}

    def kind(self, unit: str) -> UnitKind | None:
        """('mass', 'mg'|'g'|'ug') | ('volume', 'mL') | ('count', 'count') | None."""
        u = unit.strip().lower()
        if u in self.mass:
            return "mass", self.mass[u]
        if u in self.volume:
            return "volume", "mL"
        if u in self.count:
            return "count", "count"
        return None

    def mass_mg(self, amount: Fraction, unit: str) -> Fraction | None:
        """``amount`` of a mass unit word in mg, or None when ``unit`` is not a mass."""
        kind = self.kind(unit)
        if kind is None or kind[0] != "mass":
            return None
        return amount * self.mass_factor[kind[1]]


@lru_cache(maxsize=8)
def unit_table(kb: Knowledge) -> UnitTable:
    """The UnitTable of a knowledge file, built once (it is only read)."""
    return UnitTable(kb)


def period_days(number: Fraction | None, unit: str | None, kb: Knowledge) -> Fraction | None:
    """``number`` periods of the UCUM unit ``unit`` in days; None unless both are usable."""
    if number is None or number <= 0 or unit not in kb.period_unit_days:
        return None
    return number * kb.period_unit_days[unit]


def period_word(unit: str | None, kb: Knowledge) -> str | None:
    """A time unit written as text ("hr", "hour", "day") as its UCUM code (section 6)."""
    if unit is None:
        return None
    aliases = kb.typed.units.period_aliases
    u = unit.strip()
    return aliases.get(u.lower(), u) if u not in kb.period_unit_days else u
