"""What each demo patient of the web page gives (the page tests and the browser tests)."""

from __future__ import annotations

# (demo, [(rule id, severity, numbers the detail must carry)])
DEMO_FINDINGS: list[tuple[str, list[tuple[str, str, list[str]]]]] = [
    ("1-normal-kidneys", []),
    ("2-crcl-40", []),
    ("3-dialysis", [("renal.dialysis", "high",
                     ["CrCl 10 mL/min", "15 mg/day", "5 mg/day", "N18.6", "Z99.2"])]),
    ("4-child-6y", [("pediatric.off-label", "low", ["age 6 years", "12 years"]),
                    ("oral.start-dose", "low", ["7.5 mg/day", "0.38 mg/kg/day", "20 kg",
                                                "0.3 mg/kg/day", "6 mg/day"])]),
    ("5-older-opioid", [("interaction.opioid", "moderate", ["oxycodone"]),
                        ("interaction.antihypertensive", "low", ["amlodipine"]),
                        ("geriatric.cns-burden", "moderate", ["oxycodone", "sertraline"])]),
    ("6-intrathecal-pump", []),
]
