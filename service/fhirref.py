"""FHIR references as text, read and written in one place.

A literal reference names a resource as ``Type/id``, as ``Type/id/_history/version``, or as
either of these behind a base URL (``https://server/fhir/Type/id``). ``parse_reference``
reads the type and id as the last two path segments before the first ``/_history/``
(trailing slashes ignored), so relative, absolute and versioned forms name the same
``Type/id``. A contained
reference (``#id``) and a URN (``urn:uuid:...``) name no server resource: ``local`` tells them
apart, for the readers that must not look for a ``Type/id`` inside them.
"""

from __future__ import annotations

from dataclasses import dataclass

HISTORY = "/_history/"


@dataclass(frozen=True)
class Reference:
    """A literal reference read: ``base`` is what stands before ``Type/id`` (None for a
    relative one), ``version`` what follows ``/_history/`` (None when not versioned)."""

    type: str
    id: str
    version: str | None = None
    base: str | None = None

    @property
    def relative(self) -> str:
        """``Type/id``: the key under which the service knows a resource."""
        return f"{self.type}/{self.id}"

    def __str__(self) -> str:
        return format_reference(self.type, self.id, self.version, self.base)


def split_version(text: str) -> tuple[str, str]:
    """(what stands before the first ``/_history/``, what follows it, "" when nothing)."""
    head, _, version = text.partition(HISTORY)
    return head, version


def unversioned(text: str) -> str:
    """The reference without its ``/_history/...`` part, as written otherwise."""
    return text.partition(HISTORY)[0]


def parse_reference(text: str) -> Reference | None:
    """The reference read, or None when it has fewer than two path segments (``#id``,
    ``urn:uuid:...``, a bare id or type). Nothing is checked beyond the shape: the caller
    compares the type it wants."""
    head, version = split_version(text)
    parts = head.rstrip("/").split("/")
    if len(parts) < 2:
        return None
    return Reference(parts[-2], parts[-1], version or None, "/".join(parts[:-2]) or None)


def relative(text: str) -> str | None:
    """``Type/id`` of a literal reference (relative, absolute or versioned), else None."""
    ref = parse_reference(text)
    return ref.relative if ref is not None else None


def local(text: str) -> bool:
    """A contained (``#id``) or URN (``urn:...``) reference: it names no ``Type/id``."""
    return text.startswith(("#", "urn:"))


def versioned(ref: str, version: str | None) -> str:
    """``ref/_history/version``, or ``ref`` itself without a version."""
    return f"{ref}{HISTORY}{version}" if version else ref


def format_reference(rtype: str, rid: str, version: str | None = None,
                     base: str | None = None) -> str:
    """The text of a reference: ``[base/]Type/id[/_history/version]``."""
    head = f"{base}/{rtype}/{rid}" if base else f"{rtype}/{rid}"
    return versioned(head, version)
