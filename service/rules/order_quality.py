"""Order quality: unreadable doses, as-needed without a maximum, unit mix-ups (section 9)."""

from __future__ import annotations

from fractions import Fraction

from ..findings import Finding
from ..model import OrderFacts
from ..wording import fmt, mg
from . import RuleContext


def rules(ctx: RuleContext, order: OrderFacts) -> list[Finding]:
    """Run for every baclofen order (oral or intrathecal)."""
    out: list[Finding] = []
    oral = order.route == "oral"
    specific: set[int] = set()
    below_mg = ctx.kb.rule("units.oral-microgram").num("below_mg")
    for line in order.lines:
        if (oral and line.written_unit == "ug" and line.dose_mg is not None
                and line.dose_mg < below_mg):
            # independent of the line's other problems: a likely ug/mg mix-up is always told.
            # Three decimals so that 999 micrograms is not written as "1 mg".
            in_mg = f"{fmt(line.dose_mg, 3)} mg"
            out.append(ctx.finding(
                "units.oral-microgram", "high", order,
                summary=f"Oral baclofen written as {_people(line.written)} ({in_mg}): "
                        f"probable microgram/mg mix-up",
                detail=f"The dose is written as {_people(line.written)} ({in_mg}), "
                       f"far below any oral baclofen dose; this is probably a micrograms/mg "
                       f"mix-up. Confirm the intended dose and write it in mg.",
            ))
        if line.dose_conflict and line.dose_mg is not None:
            amounts = ", ".join(f"{mg(amount)} ({kind})" for kind, amount in line.dose_conflict)
            out.append(ctx.finding(
                "order.dose-conflict", "low", order,
                summary=f"Baclofen order gives different doses: {amounts}",
                detail=f"The dose entries of this order give different amounts: {amounts}. "
                       f"The dose limits were checked against the largest, {mg(line.dose_mg)} "
                       f"per dose. Make the entries agree so that the dose given is the one "
                       f"intended.",
            ))
        if line.problem_rule == "units.liquid-volume" and oral:
            specific.add(line.index)
            concentrations = ctx.kb.rule("units.liquid-volume").numbers_of(
                "concentrations_mg_ml")
            volume = _volume(line.written)
            options = ", ".join(mg(volume * c) for c in concentrations) if volume else ""
            strengths = ", ".join(fmt(c) for c in concentrations)
            could_be = f"; {line.written} could be {options}" if options else ""
            out.append(ctx.finding(
                "units.liquid-volume", "moderate", order,
                summary=f"Baclofen liquid dose of {line.written} with no concentration",
                detail=f"The dose is {line.written} but the order does not give the "
                       f"concentration: baclofen oral liquids come as {strengths} mg/mL"
                       f"{could_be}. Write the dose in mg or name the product strength.",
            ))
        elif line.problem_rule == "order.prn-no-max":
            specific.add(line.index)
            out.append(ctx.finding(
                "order.prn-no-max", "low", order,
                summary="As-needed baclofen with no frequency or maximum daily dose",
                detail=f"The as-needed dose ({_people(line.written)}) has no frequency and no "
                       f"maximum per period, so the daily dose cannot be checked. Add how often "
                       f"it may be given or a maximum daily dose.",
            ))
    if ctx.hook == "order-select":
        return out
    unreadable = [ln for ln in order.lines if ln.problem and ln.index not in specific]
    if unreadable:
        reasons = "; ".join(dict.fromkeys(ln.problem or "" for ln in unreadable))
        out.append(ctx.finding(
            "order.unverifiable-dose", "low", order,
            summary="Baclofen dose or schedule cannot be read: not checked",
            detail=f"The dose of this baclofen order could not be checked: {reasons}. Enter a "
                   f"structured dose in mg with how often it is given.",
        ))
    return out


def _volume(written: str) -> Fraction | None:
    try:
        return Fraction(written.split()[0])
    except (ValueError, IndexError, ZeroDivisionError):
        return None


def _people(written: str) -> str:
    """A dose as written, with micrograms spelled out (section 10: never "ug")."""
    parts = written.split(" ", 1)
    if len(parts) == 2 and parts[1].strip().lower() in {"ug", "mcg", "µg", "μg"}:
        return f"{parts[0]} micrograms"
    return written
