"""Which product a medicine is: baclofen by code, word or brand (clinical-rules section 1), and
the ingredients of a medicine by name, brand or WHO ATC code (section 8).

Pure functions over CodeableConcepts and Medication resources; every name, brand and code
comes from the knowledge file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from ..fhirjson import JSON, as_dict, as_str, codings, concept_texts, dicts, has_code
from ..knowledge import Knowledge


def concepts_of(concept: JSON, med: JSON | None) -> list[JSON]:
    """The medication concept and the concepts of the Medication's ingredients."""
    return [concept] + [as_dict(i.get("itemCodeableConcept"))
                        for i in dicts((med or {}).get("ingredient"))]


def names_of(concept: JSON, med: JSON | None) -> list[str]:
    """Every text naming the medicine: the concept's text and displays, the ingredients'."""
    names = concept_texts(concept)
    if med:
        for ing in dicts(med.get("ingredient")):
            names += concept_texts(ing.get("itemCodeableConcept"))
            names += [d for d in [as_str(as_dict(ing.get("itemReference")).get("display"))] if d]
    return names


@lru_cache(maxsize=64)
def word_start(words: tuple[str, ...]) -> re.Pattern[str]:
    """Any of ``words`` at the start of a word, digits allowed right after ("Baclofen10mg"),
    case-insensitive."""
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<![a-z0-9])(?:{alternatives})(?![a-z])", re.IGNORECASE)


def baclofen_words(kb: Knowledge) -> tuple[str, ...]:
    rec = kb.typed.recognition
    return (rec.baclofen_word, *rec.baclofen_brands)


def atc_codes(concepts: Iterable[JSON], kb: Knowledge) -> list[str]:
    """The WHO ATC codes of ``concepts`` (upper case)."""
    system = kb.typed.recognition.atc_system
    return [str(c.get("code")).strip().upper() for concept in concepts for c in codings(concept)
            if as_str(c.get("system")) == system and as_str(c.get("code"))]


@lru_cache(maxsize=8)
def _baclofen_codes(kb: Knowledge) -> tuple[str, frozenset[str], frozenset[str]]:
    """(the RxNorm system, the baclofen RxNorm codes, the baclofen ATC codes upper case) of a
    knowledge file, gathered once (it is only read)."""
    rec = kb.typed.recognition
    return (rec.rxnorm_system, frozenset(rec.baclofen_rxnorm + rec.baclofen_product_rxnorm),
            frozenset(c.upper() for c in rec.baclofen_atc))


def is_baclofen(concept: JSON, med: JSON | None, kb: Knowledge,
                names: Iterable[str] | None = None) -> bool:
    """A baclofen RxNorm code (``recognition.baclofen_rxnorm``, ``baclofen_product_rxnorm``),
    ATC code (``baclofen_atc``), or a name: ``baclofen_word`` or one of ``baclofen_brands``
    at the start of a word. ``names``: the medicine's
    names when already read (``names_of``)."""
    system, rxnorm, atc = _baclofen_codes(kb)
    concepts = concepts_of(concept, med)
    if any(has_code(c, system, rxnorm) for c in concepts):
        return True
    if set(atc_codes(concepts, kb)) & atc:
        return True
    pattern = word_start(baclofen_words(kb))
    return any(pattern.search(name)
               for name in (names if names is not None else names_of(concept, med)))


def names_intrathecal_brand(texts: Iterable[str], kb: Knowledge) -> bool:
    """A product text names an intrathecal-only brand (Gablofen, Lioresal Intrathecal)."""
    brands = kb.typed.recognition.intrathecal_brands
    if not brands:
        return False
    pattern = word_start(brands)
    return any(pattern.search(t) for t in texts)


# --- ingredients of other medicines (section 8) --------------------------------------------

@lru_cache(maxsize=8)
def _brand_table(kb: Knowledge) -> tuple[re.Pattern[str] | None, dict[str, tuple[str, ...]]]:
    table = {k.lower(): v for k, v in kb.typed.brands.names.items()}
    return (word_start(tuple(table)) if table else None), table


def brand_ingredients(names: Iterable[str], kb: Knowledge) -> list[tuple[str, str]]:
    """(brand as written, ingredient) for every brand named in ``names``."""
    pattern, table = _brand_table(kb)
    if pattern is None:
        return []
    out: list[tuple[str, str]] = []
    for name in names:
        for m in pattern.finditer(name):
            for ingredient in table.get(m.group(0).lower(), ()):
                if (m.group(0), ingredient) not in out:
                    out.append((m.group(0), ingredient))
    return out


def atc_ingredient_names(codes: Iterable[str], kb: Knowledge) -> list[str]:
    """Ingredient names of full ATC codes listed in the knowledge file."""
    table = _atc_table(kb)
    return [table[c] for c in codes if c in table]


@lru_cache(maxsize=8)
def _atc_table(kb: Knowledge) -> dict[str, str]:
    """Full ATC code (upper case) -> ingredient name, from the knowledge file, built once."""
    return {k.upper(): v for k, v in kb.typed.atc_ingredients.codes.items()}


__all__ = ["atc_codes", "atc_ingredient_names", "brand_ingredients", "concepts_of",
           "is_baclofen", "names_intrathecal_brand", "names_of", "word_start"]
