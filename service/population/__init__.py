"""Population review: every active baclofen order of a FHIR Bulk Data export, checked.

Two halves, kept apart so that another engine can reuse the second:

- ``export``: reads a finished export directory (NDJSON per type or patient blocks, plain or
  gzip) into an embedded DuckDB database on disk and hands out each patient's record,
  grouped out of core;
- ``check``: one patient's record -> a Bundle -> the native Bundle path (the same parsing,
  engine and renderer as ``POST /MedicationRequest/$check``) in review mode -> the patient's
  DetectedIssues, what could not be checked, and the figures of the summary.

``review`` runs the two on one process per core and writes the outputs; ``report`` draws the
HTML page; ``bulk`` kicks off ``$export`` on a FHIR server and downloads the files.
"""
