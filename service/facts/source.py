"""What the facts stage reads: one call's resources, as the request assembler gives them. Only
the shape is named here (a Protocol), so that the facts stage does not import the layer that
builds requests (service/assemble/, service/fhir_input/)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from ..errors import Problem
from ..fhirjson import JSON


class SourceItem(Protocol):
    """One resource of the call, with the reference used for it in output."""

    @property
    def resource(self) -> JSON: ...

    @property
    def ref(self) -> str: ...

    @property
    def type(self) -> str: ...


class CallInput(Protocol):
    """One call: the orders to check, the patient, the context, the check time and mode."""

    @property
    def orders(self) -> Sequence[SourceItem]: ...

    @property
    def patient(self) -> SourceItem | None: ...

    @property
    def context(self) -> Sequence[SourceItem]: ...

    @property
    def check_time(self) -> datetime: ...

    @property
    def profile(self) -> str: ...

    @property
    def mode(self) -> str: ...

    @property
    def hook(self) -> str | None: ...

    @property
    def warnings(self) -> Sequence[Problem]: ...

    @property
    def unavailable(self) -> Sequence[str]: ...

    def resolve(self, reference: Any, within: JSON | None = None) -> JSON | None: ...
