"""Reading the knowledge file into typed sections, checking every value on the way.

A section is a frozen dataclass whose field names are the YAML keys and whose annotations say
what each value must be; ``build`` walks the YAML with the key path in hand, so a broken file
fails with the path of the bad value::

    knowledge: dosing.suggestion_step_mg: expected a number, got 'five'

Plain dataclasses and this small reader rather than pydantic (installed for fhir.resources):
the errors are ours to word (one line naming the key path, not a pydantic report), numbers
come out as exact ``Fraction`` values as the rules compare them, and the knowledge does not
follow pydantic's major-version changes, which fhir.resources decides.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from fractions import Fraction
from functools import lru_cache
from typing import Any, TypeVar, Union

T = TypeVar("T")


class KnowledgeError(RuntimeError):
    """The knowledge file is missing something a rule needs, or holds a value of a wrong type."""


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


def join(path: str, key: object) -> str:
    """``path.key``; a key with a dot in it (a rule id) in brackets: ``rules[oral.max-daily]``."""
    text = str(key)
    if "." in text:
        return f"{path}[{text}]"
    return f"{path}.{text}" if path else text


def fail(path: str, message: str) -> KnowledgeError:
    return KnowledgeError(f"knowledge: {path}: {message}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def number(value: Any, path: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Fraction):
        raise fail(path, f"expected a number, got {_shown(value)}")
    try:
        return frac(value)
    except (KnowledgeError, ZeroDivisionError):
        raise fail(path, f"expected a number, got {_shown(value)}") from None


def text(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise fail(path, f"expected text, got {_shown(value)}")
    return value


def mapping(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise fail(path, f"expected a mapping of keys to values, got {_shown(value)}")
    return value


def entry(data: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in data:
        raise fail(join(path, key), "missing")
    return data[key]


def read(kind: Any, value: Any, path: str) -> Any:
    """``value`` read as ``kind``: Fraction, str, int, a section dataclass, tuple[X, ...],
    Mapping[str, X] or X | None."""
    origin = typing.get_origin(kind)
    if origin in (Union, types.UnionType):
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        if value is None:
            return None
        if len(options) == 1:
            return read(options[0], value, path)
        errors = []
        for option in options:
            try:
                return read(option, value, path)
            except KnowledgeError as exc:
                errors.append(str(exc).rsplit(": ", 1)[-1])
        raise fail(path, " or ".join(dict.fromkeys(errors)))
    if kind is Fraction:
        return number(value, path)
    if kind is str:
        return text(value, path)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail(path, f"expected a whole number, got {_shown(value)}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise fail(path, f"expected a list, got {_shown(value)}")
        item = typing.get_args(kind)[0]
        return tuple(read(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin in (Mapping, dict, typing.Mapping):
        item = typing.get_args(kind)[1]
        return types.MappingProxyType({
            text(k, path) if not isinstance(k, int | float) else str(k):
                read(item, v, join(path, k))
            for k, v in mapping(value, path).items()})
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        return build(kind, value, path)
    raise TypeError(f"no reader for {kind!r} at {path}")  # a programming error, not the file's


_HINTS: dict[Any, dict[str, Any]] = {}


def _hints(cls: Any) -> dict[str, Any]:
    """The resolved field annotations of a section class, once per class."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def build(cls: type[T], value: Any, path: str) -> T:
    """A section dataclass from a YAML mapping: every field is a key (fields with a default
    may be absent); ``raw``, when the class has it, keeps the mapping itself."""
    data = mapping(value, path)
    hints = _hints(cls)
    args: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if not f.init:
            continue
        if f.name == "raw":
            args["raw"] = data
            continue
        key = f.metadata.get("key", f.name)
        if key not in data:
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                continue
            if typing.get_origin(hints[f.name]) in (Union, types.UnionType) and type(None) in \
                    typing.get_args(hints[f.name]):
                args[f.name] = None
                continue
            raise fail(join(path, key), "missing")
        args[f.name] = read(hints[f.name], data[key], join(path, key))
    return cls(**args)


def unread_keys(cls: Any, value: Any, path: str) -> list[str]:
    """Key paths of ``value`` that no field of ``cls`` (or of its nested sections) reads."""
    if not isinstance(value, Mapping) or not dataclasses.is_dataclass(cls):
        return []
    hints = _hints(cls)
    by_key = {f.metadata.get("key", f.name): f for f in dataclasses.fields(cls)}
    if "raw" in by_key and len(by_key) == 1:
        return []
    out: list[str] = []
    for key, item in value.items():
        f = by_key.get(str(key))
        if f is None:
            out.append(join(path, key))
            continue
        kind = hints[f.name]
        union = typing.get_origin(kind) in (Union, types.UnionType)
        for option in typing.get_args(kind) if union else (kind,):
            if dataclasses.is_dataclass(option):
                out += unread_keys(option, item, join(path, key))
            elif typing.get_origin(option) in (Mapping, dict) and isinstance(item, Mapping):
                inner = typing.get_args(option)[1]
                if dataclasses.is_dataclass(inner):
                    for k, v in item.items():
                        out += unread_keys(inner, v, join(join(path, key), k))
    return out
