"""Key pairs for the SMART and OAuth tests: generated per test run, written as PEM or JWKS."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def ec_key(curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(curve or ec.SECP384R1())


def pem(key: Key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def jwk(key: Key, kid: str, private: bool = True, alg: str | None = None) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        data = RSAAlgorithm.to_jwk(key if private else key.public_key(), as_dict=True)
    else:
        data = ECAlgorithm.to_jwk(key if private else key.public_key(), as_dict=True)
    data["kid"] = kid
    if alg:
        data["alg"] = alg
    return dict(data)


def write_pem(path: Path, *keys: Key) -> str:
    path.write_bytes(b"".join(pem(k) for k in keys))
    return str(path)


def write_jwks(path: Path, keys: list[tuple[str, Key]], private: bool = True) -> str:
    path.write_text(json.dumps({"keys": [jwk(k, kid, private) for kid, k in keys]}),
                    encoding="utf-8")
    return str(path)
