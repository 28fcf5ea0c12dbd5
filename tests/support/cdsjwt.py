"""Signed CDS Hooks JWTs for the JWT tests: the keys, the issuers, a token for a path, a call."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask.testing import FlaskClient

from tests.support import builders as b
from tests.support.cdsclient import hook_call

BASE = "http://127.0.0.1:8080"
ISS_FILE = "https://ehr.example/file-issuer"
ISS_URL = "https://ehr.example/url-issuer"
EC_KEY = ec.generate_private_key(ec.SECP256R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())


def jwk(key: Any, kid: str, alg: str) -> dict[str, Any]:
    algo = jwt.algorithms.ECAlgorithm if alg.startswith("ES") else jwt.algorithms.RSAAlgorithm
    data: dict[str, Any] = algo.to_jwk(key.public_key(), as_dict=True)
    data.update(kid=kid, alg=alg, use="sig")
    return data


def claims(path: str, **over: Any) -> dict[str, Any]:
    now = int(time.time())
    c: dict[str, Any] = {"iss": ISS_FILE, "sub": "client-1", "aud": BASE + path, "iat": now,
                         "exp": now + 300, "jti": str(uuid.uuid4())}
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def token(path: str, key: Any = EC_KEY, alg: str = "ES256", kid: str | None = "ec-1",
          headers: dict[str, Any] | None = None, **over: Any) -> str:
    h = dict(headers or {})
    if kid is not None:
        h["kid"] = kid
    return jwt.encode(claims(path, **over), key, algorithm=alg, headers=h)

DISCOVERY = "/cds-services"
SIGN = "/cds-services/baclofen-order-sign"


def call(client: FlaskClient, path: str, tok: str | None) -> Any:
    headers = {"Authorization": f"Bearer {tok}"} if tok is not None else {}
    if path == DISCOVERY:
        return client.get(path, headers=headers)
    if path.endswith("/feedback"):
        return client.post(path, headers=headers, json={"feedback": [{
            "card": str(uuid.uuid4()), "outcome": "overridden",
            "outcomeTimestamp": "2026-11-25T10:00:00Z"}]})
    return client.post(path, headers=headers, json=hook_call(b.order(), patient=b.patient()))
