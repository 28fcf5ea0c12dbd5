"""Typed errors raised anywhere below the web layer; web/errors.py turns them into responses."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Problem:
    """One OperationOutcome issue."""

    message: str
    code: str = "invalid"          # FHIR issue-type code
    expression: str | None = None  # FHIRPath of the element at fault
    severity: str = "error"


@dataclass
class ServiceError(Exception):
    status: int
    problems: list[Problem] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return "; ".join(p.message for p in self.problems)


def bad_request(message: str, expression: str | None = None, code: str = "invalid"
                ) -> ServiceError:
    return ServiceError(400, [Problem(message, code, expression)])


def unprocessable(message: str, expression: str | None = None, code: str = "processing"
                  ) -> ServiceError:
    return ServiceError(422, [Problem(message, code, expression)])


def unauthorized(message: str = "authentication is required") -> ServiceError:
    return ServiceError(
        401, [Problem(message, "login")], {"WWW-Authenticate": 'Bearer realm="baclofen-check"'}
    )


def forbidden(message: str) -> ServiceError:
    return ServiceError(403, [Problem(message, "forbidden")])
