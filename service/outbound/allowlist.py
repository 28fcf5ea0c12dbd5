"""FHIR_ALLOWLIST (interfaces.md section 1): a URL is called only when its scheme, host, port
and path prefix match an allow-listed base after normalisation (lower-case scheme and host,
default ports, percent-decoding and dot segments resolved, prefix on a path-segment
boundary). A URL that is not allowed is never contacted and never receives a token."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class _Origin:
    scheme: str
    host: str
    port: int
    path: str  # normalised, without a trailing slash ("" for the root)


def _normalise(url: str) -> _Origin | None:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    if parts.username is not None or parts.password is not None:
        return None  # credentials in a URL are never used
    path = unquote(parts.path or "/")
    if "\\" in path or "\x00" in path:
        return None
    path = posixpath.normpath("/" + path.lstrip("/"))
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    return _Origin(scheme, parts.hostname.lower().rstrip("."), port or _DEFAULT_PORTS[scheme],
                   "" if path == "/" else path.rstrip("/"))


def allowed(url: str, allowlist: Iterable[str]) -> bool:
    """True when ``url`` is under one of the allow-listed base URLs (see the module docstring).
    """
    target = _normalise(url)
    if target is None:
        return False
    for base in allowlist:
        origin = _normalise(base)
        if origin is None:
            continue
        if (target.scheme, target.host, target.port) != (origin.scheme, origin.host,
                                                         origin.port):
            continue
        if target.path == origin.path or target.path.startswith(origin.path + "/"):
            return True
    return False
