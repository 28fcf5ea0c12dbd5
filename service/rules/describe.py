"""Plain words for doses, shared by every rule family."""

from __future__ import annotations

from fractions import Fraction

from ..model import AgeFacts, DoseLine, OrderFacts, Step
from ..wording import fmt, fmt_beside, mg, mg_day, times_per_day


def age_text(age: AgeFacts | None, end: str) -> str:
    """An age for a detail. A partial birth date gives a range; ``end`` ("young" or "old")
    names the end the rule used (the one that makes it fire), and the text says so."""
    if age is None:
        return "age unknown"
    if age.partial and age.low_years != age.high_years:
        used = "younger" if end == "young" else "older"
        return (f"age {fmt(age.low_years)} to {fmt(age.high_years)} years from a partial "
                f"birth date (the {used} age is used)")
    return f"age {fmt(age.low_years if end == 'young' else age.high_years)} years"


def describe_line(line: DoseLine) -> str:
    if line.rate_mg_day is not None:
        return f"{line.written} ({mg_day(line.rate_mg_day)})"
    if line.dose_mg is None:
        return line.written
    dose = mg(line.dose_mg)
    if line.written_unit in {"count", "mL", "g", "ug"}:
        dose = f"{line.written} = {dose}"
    if line.single:
        return f"{dose} once"
    if line.prn:
        text = f"{dose} as needed"
        if line.per_day is not None:
            text += f" up to {times_per_day(line.per_day)}"
        if line.prn_max_mg_day is not None:
            text += f"{',' if line.per_day is not None else ''} at most " \
                    f"{mg_day(line.prn_max_mg_day)}"
        elif line.per_day is None and line.prn_long_cap_mg_day is not None:
            text += f" at most {mg_day(line.prn_long_cap_mg_day)} on average over its period"
        return text
    if line.per_day is None:
        return dose
    return f"{dose} {times_per_day(line.per_day)}"


def describe_step(step: Step) -> str:
    return " + ".join(describe_line(line) for line in step.lines)


def step_label(order: OrderFacts, step: Step) -> str:
    if not order.is_plan:
        return ""
    return f" in step {order.steps.index(step) + 1} of {len(order.steps)}"


def step_daily(step: Step, beside: Fraction | None = None) -> tuple[Fraction, str]:
    """(daily mg, how to write it): a lower bound says "at least". With ``beside`` (a limit
    the text compares it with) the number never reads the same as that limit unless equal."""
    daily = (step.daily_mg or Fraction(0)) if step.complete else step.known_daily_mg
    text = f"{fmt_beside(daily, beside)} mg/day" if beside is not None else mg_day(daily)
    return daily, text if step.complete else f"at least {text}"


def worst_daily_step(order: OrderFacts) -> Step | None:
    steps = [s for s in order.steps if s.known_daily_mg > 0]
    return max(steps, key=lambda s: s.known_daily_mg) if steps else None


def worst_single(order: OrderFacts) -> tuple[Fraction, Step] | None:
    best: tuple[Fraction, Step] | None = None
    for step in order.steps:
        value = step.max_single_mg
        if value is not None and (best is None or value > best[0]):
            best = (value, step)
    return best


__all__ = ["describe_line", "describe_step", "step_daily", "step_label", "fmt"]
