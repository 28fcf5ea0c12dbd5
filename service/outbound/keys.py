"""Our signing keys for SMART Backend Services client assertions (``SMART_PRIVATE_KEYS``).

The setting is the path of a PEM file (one or more private keys, PKCS#8 or traditional) or
of a JWKS file whose keys carry their private parts. Accepted: RSA of at least 2048 bits,
signing with RS384, and EC on P-384, signing with ES384 (SMART App Launch 2.x, Backend
Services: "RS384 or ES384"). The first key signs; every key is published in
``GET /.well-known/jwks.json`` (public parts only), so a second key can be published before
it signs (key rotation). A key's ``kid`` is the JWKS ``kid``, else its RFC 7638 thumbprint.

Nothing of a private key is ever logged or put into an error message.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

MIN_RSA_BITS = 2048
_PEM_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z ]*PRIVATE KEY)-----.+?-----END \1-----", re.DOTALL)

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class KeyFileError(ValueError):
    """The key file cannot be used; the message names the file and the reason, never key
    material."""


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    private: PrivateKey = field(repr=False)

    def public_jwk(self) -> dict[str, Any]:
        """The public JWK with ``kid``, ``alg``, ``use: sig`` and no private member."""
        return {**_public_members(self.private.public_key()), "kid": self.kid,
                "alg": self.alg, "use": "sig", "key_ops": ["verify"]}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _public_members(public: Any) -> dict[str, Any]:
    if isinstance(public, rsa.RSAPublicKey):
        jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        return {k: jwk[k] for k in ("kty", "n", "e")}
    jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    return {k: jwk[k] for k in ("kty", "crv", "x", "y")}


def thumbprint(members: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256) of the required public members."""
    names = ("e", "kty", "n") if members["kty"] == "RSA" else ("crv", "kty", "x", "y")
    canonical = json.dumps({k: members[k] for k in names}, separators=(",", ":"),
                           sort_keys=True)
    return _b64(hashlib.sha256(canonical.encode()).digest())


def _alg_for(key: Any, source: str) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise KeyFileError(f"{source}: an RSA key of {key.key_size} bits (at least "
                            f"{MIN_RSA_BITS} are needed)")
        return "RS384"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP384R1):
            raise KeyFileError(f"{source}: an EC key on {key.curve.name} (ES384 needs P-384)")
        return "ES384"
    raise KeyFileError(f"{source}: a {type(key).__name__} (RSA or EC P-384 keys are accepted)")


def _from_pem(data: bytes, source: str) -> Iterator[SigningKey]:
    blocks = [m.group(0) for m in _PEM_BLOCK.finditer(data)]
    if not blocks:
        raise KeyFileError(f"{source}: no PEM private key in the file")
    for n, block in enumerate(blocks, 1):
        try:
            key = serialization.load_pem_private_key(block, password=None)
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"{source}: private key {n} cannot be read (encrypted keys are "
                            "not supported)") from exc
        alg = _alg_for(key, source)
        yield SigningKey(thumbprint(_public_members(key.public_key())), alg,
                         key)  # type: ignore[arg-type]


def _from_jwks(data: Any, source: str) -> Iterator[SigningKey]:
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise KeyFileError(f"{source}: a JWKS needs a \"keys\" array")
    for n, jwk in enumerate(data["keys"], 1):
        if not isinstance(jwk, dict) or jwk.get("kty") not in ("RSA", "EC"):
            raise KeyFileError(f"{source}: key {n} is not an RSA or EC JWK")
        if "d" not in jwk:
            raise KeyFileError(f"{source}: key {n} has no private part")
        try:
            algorithm = RSAAlgorithm if jwk["kty"] == "RSA" else ECAlgorithm
            key = algorithm.from_jwk(jwk)
        except Exception as exc:  # PyJWT raises several types for a bad JWK
            raise KeyFileError(f"{source}: key {n} cannot be read") from exc
        alg = _alg_for(key, source)
        declared = jwk.get("alg")
        if declared is not None and declared != alg:
            raise KeyFileError(f"{source}: key {n} declares alg {declared!r}; this key signs "
                            f"with {alg}")
        kid = jwk.get("kid")
        if kid is not None and not (isinstance(kid, str) and kid):
            raise KeyFileError(f"{source}: key {n} has an empty or non-string kid")
        members = _public_members(key.public_key())  # type: ignore[union-attr]
        yield SigningKey(kid or thumbprint(members), alg, key)  # type: ignore[arg-type]


def load_keys(path: str) -> tuple[SigningKey, ...]:
    """The keys of ``SMART_PRIVATE_KEYS`` (the first signs); raises KeyFileError."""
    source = f"SMART_PRIVATE_KEYS ({path})"
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{source} cannot be read: {exc.strerror or type(exc).__name__}"
                        ) from exc
    if data.lstrip().startswith(b"{"):
        try:
            parsed = json.loads(data)
        except ValueError as exc:
            raise KeyFileError(f"{source}: not valid JSON") from exc
        keys = tuple(_from_jwks(parsed, source))
    else:
        keys = tuple(_from_pem(data, source))
    if not keys:
        raise KeyFileError(f"{source}: no key in the file")
    kids = [k.kid for k in keys]
    if len(set(kids)) != len(kids):
        raise KeyFileError(f"{source}: two keys share a kid")
    return keys


def public_jwks(keys: tuple[SigningKey, ...]) -> dict[str, Any]:
    return {"keys": [k.public_jwk() for k in keys]}
