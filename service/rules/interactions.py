"""Other medicines (clinical-rules section 8): one finding per class, CNS burden, pregnancy."""

from __future__ import annotations

from collections.abc import Callable

from ..clinical.ingredients import atc_matches, matches
from ..findings import Finding
from ..model import MedicationUse, OrderFacts
from . import RuleContext
from .describe import age_text


def ingredients_in(ctx: RuleContext, use: MedicationUse, ingredients: list[str],
                   suffixes: list[str], atc_prefixes: list[str]) -> list[str]:
    """The ingredients of ``use`` in a class: by name (brands read as their ingredients, full
    ATC codes as theirs), else by the class's ATC groups (clinical-rules section 8). A name
    inside a longer one found ("gabapentin" in "gabapentin enacarbil") is not a second
    ingredient."""
    found = matches(use.names, ingredients, suffixes)
    found = [f for f in found if not any(f != g and f in g.split() for g in found)] if len(
        found) > 1 else found
    if not found:
        found = [use.name if use.name == f"ATC {code}" else f"{use.name} (ATC {code})"
                 for code in atc_matches(use.atc, atc_prefixes, ctx.kb)][:1]
    return found


def class_hits(ctx: RuleContext, rule_id: str, uses: tuple[MedicationUse, ...]
               ) -> list[tuple[MedicationUse, list[str]]]:
    spec = ctx.kb.typed.interactions[rule_id]
    hits = []
    for use in uses:
        if use.baclofen:
            continue
        found = ingredients_in(ctx, use, list(spec.ingredients), list(spec.suffixes),
                               list(spec.atc_prefixes))
        if found:
            hits.append((use, found))
    return hits


def _finding(ctx: RuleContext, rule_id: str, order: OrderFacts,
             hits: list[tuple[MedicationUse, list[str]]], baclofen_first: bool,
             baclofen_refs: tuple[str, ...] = ()) -> Finding:
    spec = ctx.kb.rule(rule_id)
    cls = ctx.kb.typed.interactions[rule_id]
    drugs = sorted({name for _, found in hits for name in found})
    severity = spec.grade()
    refs = tuple(u.ref for u, _ in hits if u.ref != order.ref)
    implicated = refs if baclofen_first else baclofen_refs
    which = ", ".join(drugs)
    kind = cls.one if len(drugs) == 1 else cls.label
    advice = ("Review the need for both, use the lowest doses and monitor for sedation and "
              "falls." if severity != "low" else "Monitor blood pressure and for dizziness.")
    return ctx.finding(
        rule_id, severity, order,
        summary=f"Baclofen with {which} ({kind})"[:139],
        detail=f"Baclofen with {which} ({kind}): {cls.effect}. {advice}",
        implicated=implicated,
        evidence=refs if baclofen_first else baclofen_refs,
    )


def rules(ctx: RuleContext, order: OrderFacts) -> list[Finding]:
    """For a baclofen order: every class found among the other medicines in use."""
    others = tuple(u for u in ctx.medications if u.ref != order.ref)
    out = []
    for rule_id in ctx.kb.typed.interactions:
        hits = class_hits(ctx, rule_id, others)
        if hits:
            out.append(_finding(ctx, rule_id, order, hits, baclofen_first=True))
    burden = cns_burden(ctx, order, others)
    if burden is not None:
        out.append(burden)
    return out


def draft_rules(ctx: RuleContext, order: OrderFacts) -> list[Finding]:
    """For a draft of another medicine while baclofen is active: the same class finding with
    the draft implicated first, then the baclofen."""
    baclofen = tuple(u.ref for u in ctx.medications if u.baclofen and not u.checked)
    if not baclofen:
        return []
    own = tuple(u for u in ctx.medications if u.ref == order.ref)
    out = []
    for rule_id in ctx.kb.typed.interactions:
        hits = class_hits(ctx, rule_id, own)
        if hits:
            out.append(_finding(ctx, rule_id, order, hits, baclofen_first=False,
                                baclofen_refs=baclofen))
    return out


def cns_burden(ctx: RuleContext, order: OrderFacts, others: tuple[MedicationUse, ...]
               ) -> Finding | None:
    spec = ctx.kb.typed.cns_active
    age = ctx.patient.age
    if age is None or age.high_years < spec.older_age:
        return None
    classes: dict[str, tuple[list[str], list[str]]] = {}
    for name, listed in spec.classes.items():
        prefixes = list(spec.atc_prefixes.get(name, ()))
        if isinstance(listed, str):   # "from <interaction rule id>" (checked at load)
            source = ctx.kb.typed.interactions[listed.removeprefix("from ").strip()]
            listed = source.ingredients
            prefixes += list(source.atc_prefixes)
        classes[name] = (list(listed), prefixes)
    # clinical-rules section 8: counted by ingredient, so one drug in two orders is one drug
    drugs: dict[str, tuple[MedicationUse, str]] = {}
    for use in others:
        if use.baclofen:
            continue
        for cls, (members, prefixes) in classes.items():
            for ingredient in ingredients_in(ctx, use, members, [], prefixes):
                drugs.setdefault(ingredient, (use, cls))
    if len(drugs) < spec.min_other_drugs:
        return None
    listed = "; ".join(f"{ingredient} ({cls}: {u.name})"
                       for ingredient, (u, cls) in drugs.items())
    total = len(drugs) + 1
    return ctx.finding(
        "geriatric.cns-burden", "moderate", order,
        summary=f"Baclofen makes {total} CNS-active drugs for a patient aged "
                f"{spec.older_age} or over",
        detail=f"With baclofen the patient ({age_text(age, 'old')}) would take "
               f"{total} CNS-active drugs: baclofen and {listed}. Beers 2023 advises avoiding "
               f"three or more CNS-active drugs together (falls, fractures); deprescribe where "
               f"possible.",
        implicated=tuple(dict.fromkeys(u.ref for u, _ in drugs.values())),
        evidence=tuple(dict.fromkeys(u.ref for u, _ in drugs.values())),
    )


# Recorded patient states that get a low note, citing the records: (the PatientFacts field,
# summary, detail with ``{refs}``).
_STATES: dict[str, tuple[str, str, str]] = {
    "pregnancy": (
        "pregnancy_refs", "Pregnancy recorded: baclofen can cause neonatal withdrawal",
        "Pregnancy is recorded ({refs}). Baclofen taken late in pregnancy can cause "
        "withdrawal in the newborn: taper before delivery when feasible."),
    # clinical-rules section 8: additive CNS depression with alcohol (label section 7)
    "interaction.alcohol": (
        "alcohol_refs",
        "Alcohol use disorder recorded: alcohol adds to baclofen's CNS depression",
        "Alcohol use disorder is recorded ({refs}). Alcohol adds to the CNS depression of "
        "baclofen (drowsiness, falls, respiratory depression): advise against alcohol and "
        "monitor for sedation."),
    # clinical-rules section 9 (S47)
    "lactation": (
        "breastfeeding_refs", "Breastfeeding recorded: baclofen passes into milk in small amounts",
        "Breastfeeding is recorded ({refs}). Small amounts of baclofen pass into breast milk: "
        "watch the infant for sedation and poor feeding."),
}


def _state_rule(rule_id: str) -> Callable[[RuleContext, OrderFacts], list[Finding]]:
    field, summary, detail = _STATES[rule_id]

    def rule(ctx: RuleContext, order: OrderFacts) -> list[Finding]:
        refs: tuple[str, ...] = getattr(ctx.patient, field)
        if not refs:
            return []
        return [ctx.finding(rule_id, "low", order, summary=summary,
                            detail=detail.format(refs=", ".join(refs)), evidence=refs)]

    rule.__name__ = f"{rule_id.replace('.', '_').replace('-', '_')}_rule"
    return rule


pregnancy_rule = _state_rule("pregnancy")
alcohol_rule = _state_rule("interaction.alcohol")
lactation_rule = _state_rule("lactation")
