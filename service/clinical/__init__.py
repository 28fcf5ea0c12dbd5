"""Pure clinical formulas and queries: numbers in, numbers out; no prose, no FHIR, no clock."""
