"""The facts stage: FHIR JSON of one call in, the typed facts of service/model.py out, each
medicine identified and each resource read once per call (``build_facts``, facts/build.py).

Modules: build.py (the stage), drugs.py and products.py (which medicine, route, strength),
orders.py and timing.py (a dosage read), history.py (baclofen regimens), medications.py
(medicines in use).
"""
