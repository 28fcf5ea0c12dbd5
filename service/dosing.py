"""Moved: drug and route recognition and strength are service/facts/drugs.py, the timing
service/facts/timing.py, the order reader service/facts/orders.py, unit arithmetic
service/clinical/units.py, units for people service/wording.py. This shim stays only while
tests/ (read-only until its reorganisation lands) and files being edited by others import from
here."""

from .clinical.units import UnitTable, unit_table
from .facts.drugs import Resolve, medication_of, names_baclofen, quantity_unit, route_of, strengths
from .facts.orders import read_order
from .facts.products import is_baclofen
from .facts.products import names_of as drug_names

__all__ = ["Resolve", "UnitTable", "drug_names", "is_baclofen", "medication_of", "names_baclofen",
           "quantity_unit", "read_order", "route_of", "strengths", "unit_table"]
