"""Validate our CDS Hooks JSON with healthchain's pydantic models.

Runs inside .venv-healthchain (healthchain's dependencies stay out of the service's venv), as
``python tests/support/healthchain_validate.py KIND < json``; KIND is ``discovery`` or
``responses``.
Prints a JSON summary; exits non-zero (with the validation error) when anything is invalid or
when a field of ours would be dropped by the models (other than the ``extension`` object).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from healthchain.models.hooks.orderselect import OrderSelectContext
from healthchain.models.hooks.ordersign import OrderSignContext
from healthchain.models.hooks.patientview import PatientViewContext
from healthchain.models.responses.cdsdiscovery import CDSServiceInformation
from healthchain.models.responses.cdsresponse import CDSResponse


def _same(ours: Any, theirs: Any, where: str) -> None:
    """Every field we send survives the model (so none is unknown or misspelt)."""
    if isinstance(ours, dict):
        assert isinstance(theirs, dict), where
        for key, value in ours.items():
            if key in {"extension", "resource"}:
                continue  # extension objects and FHIR resources are free-form for the models
            assert key in theirs, f"{where}.{key} is not a field of the healthchain model"
            _same(value, theirs[key], f"{where}.{key}")
    elif isinstance(ours, list):
        assert isinstance(theirs, list) and len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            _same(a, b, f"{where}[{i}]")


def discovery(data: Any) -> dict[str, Any]:
    model = CDSServiceInformation.model_validate(data)
    _same(data, model.model_dump(mode="json", exclude_none=True), "discovery")
    return {"services": len(model.services)}


def responses(data: Any) -> dict[str, Any]:
    for request in data["requests"]:
        model = {"order-sign": OrderSignContext, "order-select": OrderSelectContext,
                 "patient-view": PatientViewContext}[request["hook"]]
        model.model_validate(request["context"])
    count = 0
    for n, response in enumerate(data["responses"]):
        parsed = CDSResponse.model_validate(response)
        dumped = parsed.model_dump(mode="json", exclude_none=True)
        _same(response, dumped, f"responses[{n}]")
        for card in parsed.cards:
            assert len(card.summary) < 140
            assert card.uuid
            for suggestion in card.suggestions or []:
                assert suggestion.uuid
        count += len(parsed.cards)
    return {"cards": count}


def main() -> int:
    kind = sys.argv[1]
    data = json.load(sys.stdin)
    result = {"discovery": discovery, "responses": responses}[kind](data)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
