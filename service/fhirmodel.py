"""Whether JSON is a valid R4 resource, by the fhir.resources R4B models (the first error,
named by its FHIRPath). Low in the layers: the assembler validates with it and the renderer
checks the id-less resources it echoes.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from .fhirjson import JSON


def expression(rtype: str, loc: tuple[Any, ...]) -> str:
    path = rtype
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def model_problem(resource: JSON, rtype: str) -> str | None:
    """Why ``resource`` is not a valid R4 ``rtype`` (the first error), or None."""
    # commands that never validate (the review's grouping, the watch receiver) do not pay
    from fhir.resources.R4B import get_fhir_model_class  # lazy: the R4B models are large

    try:
        get_fhir_model_class(rtype).model_validate(resource)
    except ValidationError as exc:
        errors = exc.errors()
        if not errors:
            return "it is not valid FHIR"
        where = expression(rtype, tuple(errors[0].get("loc", ())))
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return f"it is not valid FHIR: {where}: {errors[0].get('msg')}{more}"
    except (ValueError, TypeError, RecursionError) as exc:
        return f"it is not valid FHIR: {type(exc).__name__}"
    return None
