"""Ingredient matching for other medicines (clinical-rules section 8): pure queries over the
lower-case names and WHO ATC codes of a medicine (``MedicationUse.names`` / ``.atc``)."""

from __future__ import annotations

import re
from functools import lru_cache

from ..knowledge import Knowledge


def is_baclofen_atc(code: str, kb: Knowledge) -> bool:
    """``code`` (upper case) is a baclofen ATC code (``recognition.baclofen_atc``)."""
    return code in {c.upper() for c in kb.typed.recognition.baclofen_atc}


@lru_cache(maxsize=4096)
def _whole_word(word: str) -> re.Pattern[str]:
    return re.compile(rf"\b{re.escape(word)}\b")


_LETTERS = re.compile(r"[a-z]+")


@lru_cache(maxsize=256)
def _any_of(ingredients: tuple[str, ...]) -> re.Pattern[str]:
    """One pattern that finds a name containing any of ``ingredients`` as a whole word: it
    rules out, in one search, a medicine that matches none of a class (the usual case)."""
    return re.compile(r"\b(?:" + "|".join(re.escape(i.lower()) for i in ingredients) + r")\b")


@lru_cache(maxsize=256)
def _ends_any(suffixes: tuple[str, ...]) -> re.Pattern[str]:
    """One pattern that finds a word of three letters or more before any of ``suffixes``, at
    the end of the word: a name without one has no suffix word (the usual case), in one
    search."""
    return re.compile(r"[a-z]{3}(?:" + "|".join(re.escape(s) for s in suffixes) + r")(?![a-z])")


def matches(names: tuple[str, ...], ingredients: list[str], suffixes: list[str]) -> list[str]:
    """The ingredient names (or suffix words) found as whole words in ``names``."""
    found: list[str] = []
    if ingredients and names:
        anything = _any_of(tuple(ingredients))
        if any(anything.search(n) for n in names):
            for ingredient in ingredients:
                low = ingredient.lower()
                # a whole-word match is also a substring: the cheap test rules out most
                if any(low in n for n in names) and any(
                        _whole_word(low).search(n) for n in names):
                    found.append(ingredient)
    if suffixes and any(_ends_any(tuple(suffixes)).search(n) for n in names):
        words = [word for n in names for word in _LETTERS.findall(n)]
        for suffix in suffixes:
            for word in words:
                if word.endswith(suffix) and len(word) > len(suffix) + 2 and word not in found:
                    found.append(word)
    return found


def atc_matches(atc: tuple[str, ...], prefixes: list[str], kb: Knowledge) -> list[str]:
    """The ATC codes of ``atc`` in the groups ``prefixes`` (baclofen, M03BX01, never)."""
    return [code for code in atc
            if not is_baclofen_atc(code, kb)
            and any(code.startswith(str(p).upper()) for p in prefixes)]
