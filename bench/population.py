"""A generated FHIR Bulk Data export of N patients, for the population review's tests and bench.

    .venv/bin/python bench/population.py N DIR [--organize-by-patient] [--gzip] [--seed S]

Writes what a server's ``$export`` leaves: one NDJSON file per resource type (``Patient.ndjson``,
``MedicationRequest.ndjson`` ...), or with ``--organize-by-patient`` files of patient blocks
(each Patient followed by its resources and the Medications they reference, as with
``organizeOutputBy=Patient``), optionally gzip-compressed; and a ``manifest.json``.

The population is deterministic from the seed (each patient from its own seeded generator, so
patient ``i`` is the same whatever N is). Dates are relative to ``REFERENCE`` (review it with
``--check-time`` set to that instant). About a third of the patients are on baclofen (four in
five by mouth, with earlier orders, dispenses and statements as history; one in five by
intrathecal pump); kidney results span every band (creatinine with weight, or a reported
eGFR, sometimes none, sometimes stale); some are on dialysis; there are children and older
adults on CNS-active medicines (opioids, antidepressants, gabapentinoids, Z-drugs), other
medicines, and resources the rules do not read (Encounter, Immunization, AllergyIntolerance).
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

JSON = dict[str, Any]
REFERENCE = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
REFERENCE_TEXT = "2026-11-25T10:00:00Z"
DEFAULT_SEED = 20261125
BLOCK_PATIENTS = 500   # patients per file when organised by patient

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"

# shared Medication resources (referenced by medicationReference from some orders)
MEDICATIONS: list[JSON] = [
    {"resourceType": "Medication", "id": "med-baclofen-10-tab",
     "code": {"coding": [{"system": RXNORM, "code": "197405",
                          "display": "baclofen 10 MG Oral Tablet"}],
              "text": "baclofen 10 MG Oral Tablet"},
     "ingredient": [{"itemCodeableConcept": {"coding": [{"system": RXNORM, "code": "1292",
                                                         "display": "baclofen"}]},
                     "strength": {"numerator": {"value": 10, "unit": "mg", "system": UCUM,
                                                "code": "mg"},
                                  "denominator": {"value": 1, "unit": "tablet"}}}]},
    {"resourceType": "Medication", "id": "med-lisinopril-10-tab",
     "code": {"text": "lisinopril 10 MG Oral Tablet"}},
]
OTHER_MEDICINES = ("lisinopril 10 MG Oral Tablet", "metformin 500 MG Oral Tablet",
                   "atorvastatin 20 MG Oral Tablet", "amlodipine 5 MG Oral Tablet",
                   "levothyroxine 50 MCG Oral Tablet", "omeprazole 20 MG Oral Capsule")
CNS_MEDICINES = ("oxycodone hydrochloride 5 MG Oral Tablet", "sertraline 50 MG Oral Tablet",
                 "gabapentin 300 MG Oral Capsule", "zolpidem 5 MG Oral Tablet",
                 "tramadol 50 MG Oral Tablet", "amitriptyline 10 MG Oral Tablet")
ORAL_DOSES_MG = (5, 5, 10, 10, 10, 15, 20, 20, 25, 30)
IT_RATES_UG_DAY = (50, 100, 150, 250, 300, 400, 500, 700, 900, 1200)


def _when(days_before: float) -> str:
    return (REFERENCE - timedelta(days=days_before)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _date(days_before: float) -> str:
    return (REFERENCE - timedelta(days=days_before)).strftime("%Y-%m-%d")


def _qty(value: float, unit: str) -> JSON:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


class _Patient:
    """One patient's resources, with ids that are unique in the export."""

    def __init__(self, index: int, seed: int) -> None:
        self.rng = random.Random(f"{seed}:{index}")
        self.pid = f"p{index:06d}"
        self.subject = {"reference": f"Patient/{self.pid}"}
        self.resources: list[JSON] = []
        self._n = 0

    def rid(self, kind: str) -> str:
        self._n += 1
        return f"{self.pid}-{kind}{self._n}"

    def add(self, resource: JSON) -> JSON:
        self.resources.append(resource)
        return resource

    def observation(self, loinc: str, display: str, value: float, unit: str,
                    days_before: float) -> None:
        self.add({"resourceType": "Observation", "id": self.rid("obs"), "status": "final",
                  "category": [{"coding": [{
                      "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                      "code": "laboratory" if unit != "kg" else "vital-signs"}]}],
                  "code": {"coding": [{"system": LOINC, "code": loinc, "display": display}],
                           "text": display},
                  "subject": self.subject, "effectiveDateTime": _when(days_before),
                  "valueQuantity": _qty(value, unit)})

    def condition(self, icd10: str, display: str, onset_days_before: float) -> None:
        self.add({"resourceType": "Condition", "id": self.rid("cond"), "subject": self.subject,
                  "clinicalStatus": {"coding": [{"system": CLINICAL, "code": "active"}]},
                  "code": {"coding": [{"system": ICD10, "code": icd10, "display": display}],
                           "text": display},
                  "onsetDateTime": _when(onset_days_before)})

    def medicine(self, text: str, status: str = "active", days_before: float = 200) -> None:
        self.add({"resourceType": "MedicationRequest", "id": self.rid("mr"), "status": status,
                  "intent": "order", "subject": self.subject,
                  "medicationCodeableConcept": {"text": text},
                  "authoredOn": _when(days_before),
                  "dosageInstruction": [{"text": "as directed", "timing": {"repeat": {
                      "frequency": 1, "period": 1, "periodUnit": "d"}}}]})


def _oral_order(p: _Patient, dose_mg: float, per_day: int, status: str, start_days: float,
                end_days: float | None = None) -> JSON:
    rng = p.rng
    med: JSON
    if rng.random() < 0.2:
        med = {"medicationReference": {"reference": "Medication/med-baclofen-10-tab"}}
    elif rng.random() < 0.5:
        med = {"medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "1292",
                                                         "display": "baclofen"}],
                                             "text": "baclofen 10 MG Oral Tablet"}}
    elif rng.random() < 0.8:
        med = {"medicationCodeableConcept": {"text": "baclofen 10 MG Oral Tablet"}}
    else:  # a brand name only
        med = {"medicationCodeableConcept": {"text": "Lioresal 10 MG Oral Tablet"}}
    bounds: JSON = {"start": _date(start_days)}
    if end_days is not None:
        bounds["end"] = _date(end_days)
    return p.add({"resourceType": "MedicationRequest", "id": p.rid("mr"), "status": status,
                  "intent": "order", "subject": p.subject, **med,
                  "authoredOn": _when(start_days),
                  "dosageInstruction": [{
                      "text": f"{dose_mg:g} mg by mouth {per_day} times a day",
                      "route": {"coding": [{"system": SNOMED, "code": "26643006",
                                            "display": "Oral route"}]},
                      "timing": {"repeat": {"frequency": per_day, "period": 1,
                                            "periodUnit": "d", "boundsPeriod": bounds}},
                      "doseAndRate": [{"doseQuantity": _qty(dose_mg, "mg")}]}]})


def _intrathecal_order(p: _Patient, rate_ug_day: float, status: str, start_days: float,
                       end_days: float | None = None) -> JSON:
    bounds: JSON = {"start": _date(start_days)}
    if end_days is not None:
        bounds["end"] = _date(end_days)
    return p.add({"resourceType": "MedicationRequest", "id": p.rid("mr"), "status": status,
                  "intent": "order", "subject": p.subject,
                  "medicationCodeableConcept": {
                      "coding": [{"system": RXNORM, "code": "1292", "display": "baclofen"}],
                      "text": "baclofen 2 MG/ML intrathecal injection"},
                  "authoredOn": _when(start_days),
                  "dosageInstruction": [{
                      "text": f"{rate_ug_day:g} micrograms a day by continuous intrathecal "
                              "infusion",
                      "route": {"coding": [{"system": SNOMED, "code": "72607000",
                                            "display": "Intrathecal route"}]},
                      "timing": {"repeat": {"boundsPeriod": bounds}},
                      "doseAndRate": [{"rateQuantity": _qty(rate_ug_day, "ug/d")}]}]})


def patient_record(index: int, seed: int = DEFAULT_SEED) -> list[JSON]:
    """Patient ``index``'s resources: the Patient first, then the rest (Medications it
    references are not included: they are shared, see ``MEDICATIONS``)."""
    p = _Patient(index, seed)
    rng = p.rng
    kind = rng.random()
    if kind < 0.08:
        age = rng.uniform(3, 11.9)        # children
    elif kind < 0.12:
        age = rng.uniform(12, 17.9)       # adolescents
    elif kind < 0.70:
        age = rng.uniform(18, 64.9)
    else:
        age = rng.uniform(65, 96)         # older adults
    female = rng.random() < 0.5
    born = _date(age * 365.25)
    p.add({"resourceType": "Patient", "id": p.pid, "gender": "female" if female else "male",
           "birthDate": born,
           "name": [{"family": f"Family{index % 977}", "given": [f"Given{index % 613}"]}]})

    # kidney function: creatinine with a weight, or a reported eGFR, or nothing; sometimes old
    weight = (round(rng.uniform(14, 45), 1) if age < 12 else
              round(rng.uniform(40, 70), 1) if age < 18 else round(rng.uniform(48, 120), 1))
    renal = rng.random()
    days_ago = rng.choice((3, 10, 40, 120, 400)) if rng.random() < 0.9 else 30
    if renal < 0.45:
        creatinine = rng.choice((0.6, 0.8, 1.0, 1.2, 1.5, 2.0, 2.6, 3.5, 5.0, 7.5))
        p.observation("29463-7", "Body weight", weight, "kg", days_ago)
        p.observation("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", creatinine,
                      "mg/dL", days_ago)
    elif renal < 0.80:
        egfr = rng.choice((8, 12, 18, 25, 35, 45, 55, 65, 75, 85, 95, 110))
        p.observation("62238-1", "Glomerular filtration rate/1.73 sq M.predicted", egfr,
                      "mL/min/{1.73_m2}", days_ago)
        if rng.random() < 0.5:
            p.observation("29463-7", "Body weight", weight, "kg", days_ago)
    if rng.random() < 0.05:  # dialysis: a Condition or a recent Procedure
        if rng.random() < 0.6:
            p.condition("Z99.2", "Dependence on renal dialysis", rng.uniform(100, 2000))
        else:
            p.add({"resourceType": "Procedure", "id": p.rid("proc"), "status": "completed",
                   "subject": p.subject,
                   "code": {"coding": [{"system": SNOMED, "code": "302497006",
                                        "display": "Hemodialysis"}], "text": "Hemodialysis"},
                   "performedDateTime": _when(rng.uniform(1, 20))})
    if rng.random() < 0.1:
        p.condition("N18.3", "Chronic kidney disease, stage 3", rng.uniform(300, 3000))

    # other medicines; older adults often on CNS-active ones
    for _ in range(rng.choice((0, 1, 1, 2, 3))):
        if rng.random() < 0.1:
            p.add({"resourceType": "MedicationRequest", "id": p.rid("mr"), "status": "active",
                   "intent": "order", "subject": p.subject,
                   "medicationReference": {"reference": "Medication/med-lisinopril-10-tab"},
                   "authoredOn": _when(300)})
        else:
            p.medicine(rng.choice(OTHER_MEDICINES))
    if age >= 65 and rng.random() < 0.5:
        for text in rng.sample(CNS_MEDICINES, rng.choice((1, 2, 3))):
            p.medicine(text, days_before=rng.uniform(20, 400))
    elif rng.random() < 0.1:
        p.medicine(rng.choice(CNS_MEDICINES), days_before=rng.uniform(20, 400))

    # baclofen
    on = rng.random()
    if on < 0.28:
        start = rng.uniform(1, 200)
        if rng.random() < 0.5:  # an earlier, lower dose that ended when this one started
            before = rng.choice((5, 10))
            prev = _oral_order(p, before, 3, rng.choice(("completed", "stopped")),
                               start + rng.uniform(20, 90), start)
            if rng.random() < 0.5:
                p.add({"resourceType": "MedicationDispense", "id": p.rid("md"),
                       "status": "completed", "subject": p.subject,
                       "medicationCodeableConcept": prev.get("medicationCodeableConcept",
                                                             {"text": "baclofen 10 MG Oral "
                                                                      "Tablet"}),
                       "authorizingPrescription": [{"reference":
                                                    f"MedicationRequest/{prev['id']}"}],
                       "quantity": {"value": 90, "unit": "tablet"},
                       "daysSupply": _qty(30, "d"),
                       "whenHandedOver": _when(start + rng.uniform(5, 20))})
        dose = rng.choice(ORAL_DOSES_MG)
        per_day = rng.choice((1, 2, 3, 3, 3, 4))
        _oral_order(p, dose, per_day, "active", start)
        if rng.random() < 0.2:
            p.add({"resourceType": "MedicationStatement", "id": p.rid("ms"),
                   "status": "active", "subject": p.subject,
                   "medicationCodeableConcept": {"text": "baclofen 10 MG Oral Tablet"},
                   "effectivePeriod": {"start": _date(start)},
                   "dosage": [{"text": f"{dose:g} mg {per_day} times a day"}]})
    elif on < 0.35:
        start = rng.uniform(10, 300)
        p.add({"resourceType": "Procedure", "id": p.rid("proc"), "status": "completed",
               "subject": p.subject,
               "code": {"text": "Implantation of intrathecal baclofen pump"},
               "performedDateTime": _when(start + 400)})
        rate = rng.choice(IT_RATES_UG_DAY)
        if rng.random() < 0.5:
            _intrathecal_order(p, round(rate * 0.9), "completed", start + 60, start)
        _intrathecal_order(p, rate, "active", start)
    elif on < 0.40:  # baclofen in the past only: nothing to review
        _oral_order(p, 10, 3, "stopped", rng.uniform(200, 400), rng.uniform(100, 190))

    # resources the rules do not read
    p.add({"resourceType": "Encounter", "id": p.rid("enc"), "status": "finished",
           "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                     "code": "AMB"}, "subject": p.subject,
           "period": {"start": _when(rng.uniform(1, 300))}})
    if rng.random() < 0.3:
        p.add({"resourceType": "Immunization", "id": p.rid("imm"), "status": "completed",
               "vaccineCode": {"text": "influenza vaccine"}, "patient": p.subject,
               "occurrenceDateTime": _when(rng.uniform(1, 300))})
    if rng.random() < 0.2:
        p.add({"resourceType": "AllergyIntolerance", "id": p.rid("alg"), "patient": p.subject,
               "code": {"text": "penicillin"}})
    return p.resources


def referenced_medications(resources: list[JSON]) -> list[JSON]:
    """The shared Medications the record references."""
    wanted = {str(r.get("medicationReference", {}).get("reference", "")) for r in resources}
    return [m for m in MEDICATIONS if f"Medication/{m['id']}" in wanted]


def population(n: int, seed: int = DEFAULT_SEED) -> Iterator[list[JSON]]:
    for index in range(n):
        yield patient_record(index, seed)


def _open(path: Path, compress: bool) -> IO[str]:
    if compress:
        return gzip.open(str(path) + ".gz", "wt", encoding="utf-8", compresslevel=3)
    return path.open("w", encoding="utf-8")


def write_export(n: int, out_dir: Path, seed: int = DEFAULT_SEED,
                 organize_by_patient: bool = False, compress: bool = False) -> JSON:
    """Write the export of ``n`` patients into ``out_dir``; returns its manifest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = ".ndjson.gz" if compress else ".ndjson"
    counts: dict[str, int] = {}
    outputs: list[JSON] = []
    if organize_by_patient:
        stream: IO[str] | None = None
        for index, record in enumerate(population(n, seed)):
            if index % BLOCK_PATIENTS == 0:
                if stream:
                    stream.close()
                name = f"output_{index // BLOCK_PATIENTS:04d}.ndjson"
                stream = _open(out_dir / name, compress)
                outputs.append({"url": name + (".gz" if compress else "")})
            assert stream is not None
            for resource in record + referenced_medications(record):
                stream.write(json.dumps(resource, separators=(",", ":")) + "\n")
                counts[resource["resourceType"]] = counts.get(resource["resourceType"], 0) + 1
        if stream:
            stream.close()
    else:
        streams: dict[str, IO[str]] = {}
        try:
            for record in population(n, seed):
                for resource in record:
                    rtype = resource["resourceType"]
                    if rtype not in streams:
                        streams[rtype] = _open(out_dir / f"{rtype}.ndjson", compress)
                    streams[rtype].write(json.dumps(resource, separators=(",", ":")) + "\n")
                    counts[rtype] = counts.get(rtype, 0) + 1
            with _open(out_dir / "Medication.ndjson", compress) as meds:
                for med in MEDICATIONS:
                    meds.write(json.dumps(med, separators=(",", ":")) + "\n")
            counts["Medication"] = len(MEDICATIONS)
        finally:
            for s in streams.values():
                s.close()
        outputs = [{"type": t, "url": f"{t}{suffix}", "count": counts[t]} for t in sorted(counts)]
    manifest: JSON = {"transactionTime": REFERENCE_TEXT, "request": "generated",
                      "requiresAccessToken": False, "output": outputs, "error": []}
    if organize_by_patient:
        manifest["outputOrganizedBy"] = "Patient"
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", type=int, help="number of patients")
    parser.add_argument("dir", type=Path, help="output directory")
    parser.add_argument("--organize-by-patient", action="store_true")
    parser.add_argument("--gzip", action="store_true")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    manifest = write_export(args.n, args.dir, args.seed, args.organize_by_patient, args.gzip)
    print(f"{args.n} patients in {len(manifest['output'])} files under {args.dir}; review with "
          f"--check-time {REFERENCE_TEXT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
