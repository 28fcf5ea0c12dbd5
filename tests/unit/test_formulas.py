"""The kidney formulas of service/clinical/renal.py against reference values worked out by
hand from the published formulas (the arithmetic is in each row's comment), with the
constants of service/knowledge/baclofen.yaml (``patient_context.renal``).

- Cockcroft-Gault (S39): CrCl = (140 - age) x weight / (72 x SCr), x 0.85 for women.
- Ideal body weight, Devine: 50 kg (men) or 45.5 kg (women) + 2.3 kg per inch over 60 in
  (1 in = 2.54 cm); adjusted weight = IBW + 0.4 x (actual - IBW).
- CKD-EPI 2021, race-free (S45): eGFR = 142 x min(SCr/k, 1)^a x max(SCr/k, 1)^-1.200
  x 0.9938^age (x 1.012 for women); k 0.7 / 0.9 and a -0.241 / -0.302 (women / men).
- Bedside Schwartz (S46): eGFR = 0.413 x height (cm) / SCr (mg/dL), from 1 to below 18 years.
"""

from __future__ import annotations

from fractions import Fraction as F

import pytest

from service.clinical.renal import (
    RenalInputError,
    adjusted_body_weight_kg,
    bedside_schwartz,
    bmi,
    ckd_epi_2021,
    cockcroft_gault,
    ideal_body_weight_kg,
)
from service.knowledge import load

RENAL = load().typed.patient_context.renal


@pytest.mark.parametrize(("age", "kg", "scr", "female", "expected"), [
    # (140 - 60) x 72 / (72 x 1.0) = 80 x 72 / 72 = 80
    pytest.param(60, 72, F(1), False, F(80), id="man_60y_72kg_scr_1.0"),
    # the same woman: 80 x 0.85 = 68
    pytest.param(60, 72, F(1), True, F(68), id="woman_60y_72kg_scr_1.0"),
    # (140 - 40) x 70 / (72 x 1.2) = 7000 / 86.4 = 81.018...
    pytest.param(40, 70, F("1.2"), False, F(7000) / F("86.4"), id="man_40y_70kg_scr_1.2"),
    # (140 - 85) x 50 / (72 x 1.5) = 2750 / 108 = 25.463; x 0.85 = 21.644
    pytest.param(85, 50, F("1.5"), True, F(2750, 108) * F("0.85"), id="woman_85y_50kg_scr_1.5"),
])
def test_cockcroft_gault(age: int, kg: int, scr: F, female: bool, expected: F) -> None:
    assert cockcroft_gault(F(age), F(kg), scr, female, RENAL.cockcroft_gault) == expected


def test_cockcroft_gault_worked_decimals() -> None:
    # the two inexact rows above, as decimals: 81.02 and 21.64 mL/min
    cg = RENAL.cockcroft_gault
    assert float(cockcroft_gault(F(40), F(70), F("1.2"), False, cg)) == pytest.approx(81.02,
                                                                                     abs=0.005)
    assert float(cockcroft_gault(F(85), F(50), F("1.5"), True, cg)) == pytest.approx(21.64,
                                                                                    abs=0.005)


@pytest.mark.parametrize(("age", "kg", "scr"), [
    pytest.param(17, 60, F(1), id="under_18"),
    pytest.param(60, 0, F(1), id="no_weight"),
    pytest.param(60, 60, F(0), id="no_creatinine"),
])
def test_cockcroft_gault_refuses_what_it_is_not_for(age: int, kg: int, scr: F) -> None:
    with pytest.raises(RenalInputError):
        cockcroft_gault(F(age), F(kg), scr, False, RENAL.cockcroft_gault)


@pytest.mark.parametrize(("height_cm", "female", "expected"), [
    # 180 / 2.54 = 70.866 in; 10.866 in over 60 x 2.3 = 24.992; 50 + 24.992 = 74.992 kg
    pytest.param(180, False, 50 + F("2.3") * (F(180) / F("2.54") - 60), id="man_180cm"),
    # 160 / 2.54 = 62.992 in; 2.992 in over 60 x 2.3 = 6.882; 45.5 + 6.882 = 52.382 kg
    pytest.param(160, True, F("45.5") + F("2.3") * (F(160) / F("2.54") - 60), id="woman_160cm"),
    # 150 cm is 59.06 in, under 60 in: no negative increment, 45.5 kg
    pytest.param(150, True, F("45.5"), id="woman_under_60_inches"),
])
def test_ideal_body_weight_devine(height_cm: int, female: bool, expected: F) -> None:
    assert ideal_body_weight_kg(F(height_cm), female, RENAL.ideal_body_weight) == expected


def test_ideal_body_weight_decimals() -> None:
    ibw = RENAL.ideal_body_weight
    assert float(ideal_body_weight_kg(F(180), False, ibw)) == pytest.approx(74.99, abs=0.005)
    assert float(ideal_body_weight_kg(F(160), True, ibw)) == pytest.approx(52.38, abs=0.005)


def test_adjusted_weight_and_bmi() -> None:
    # 70 + 0.4 x (120 - 70) = 70 + 20 = 90 kg
    fraction = RENAL.cockcroft_gault.adjusted_weight_fraction
    assert adjusted_body_weight_kg(F(120), F(70), fraction) == 90
    # 90 kg / (1.5 m)^2 = 90 / 2.25 = 40 kg/m2
    assert bmi(F(90), F(150)) == 40


@pytest.mark.parametrize(("age", "scr", "female", "expected"), [
    # SCr/k = 0.9/0.9 = 1: both power terms are 1; 0.9938^50 = 0.73274; 142 x 0.73274 = 104.05
    pytest.param(50, "0.9", False, 104.05, id="man_50y_scr_at_kappa"),
    # 1.0/0.9 = 1.1111; 1.1111^-1.2 = 0.88123; 142 x 0.88123 x 0.73274 = 91.69
    pytest.param(50, "1.0", False, 91.69, id="man_50y_scr_1.0"),
    # 1.4/0.7 = 2; 2^-1.2 = 0.43528; 0.9938^60 = 0.68856; 142 x 0.43528 x 0.68856 x 1.012 = 43.07
    pytest.param(60, "1.4", True, 43.07, id="woman_60y_scr_1.4"),
    # 0.5/0.7 = 0.71429 (below k): 0.71429^-0.241 = 1.08447; 0.9938^30 = 0.82979;
    # 142 x 1.08447 x 0.82979 x 1.012 = 129.32
    pytest.param(30, "0.5", True, 129.32, id="woman_30y_scr_below_kappa"),
    # 2.0/0.9 = 2.2222; 2.2222^-1.2 = 0.38358; 0.9938^70 = 0.64704; 142 x 0.38358 x 0.64704 = 35.24
    pytest.param(70, "2.0", False, 35.24, id="man_70y_scr_2.0"),
])
def test_ckd_epi_2021(age: int, scr: str, female: bool, expected: float) -> None:
    got = ckd_epi_2021(F(age), F(scr), female, RENAL.ckd_epi_2021)
    assert float(got) == pytest.approx(expected, abs=0.01)


def test_ckd_epi_2021_is_not_for_children() -> None:
    with pytest.raises(RenalInputError):
        ckd_epi_2021(F(17), F(1), False, RENAL.ckd_epi_2021)


@pytest.mark.parametrize(("age", "height_cm", "scr", "expected"), [
    # 0.413 x 120 / 0.5 = 49.56 / 0.5 = 99.12
    pytest.param(8, 120, "0.5", F("99.12"), id="8y_120cm_scr_0.5"),
    # 0.413 x 150 / 0.8 = 61.95 / 0.8 = 77.4375
    pytest.param(14, 150, "0.8", F("77.4375"), id="14y_150cm_scr_0.8"),
    # 0.413 x 100 / 0.4 = 41.3 / 0.4 = 103.25
    pytest.param(4, 100, "0.4", F("103.25"), id="4y_100cm_scr_0.4"),
])
def test_bedside_schwartz(age: int, height_cm: int, scr: str, expected: F) -> None:
    assert bedside_schwartz(F(age), F(height_cm), F(scr), RENAL.bedside_schwartz) == expected


@pytest.mark.parametrize("age", [pytest.param(F(1, 2), id="under_1"), pytest.param(18, id="18")])
def test_bedside_schwartz_is_for_1_to_under_18(age: F) -> None:
    with pytest.raises(RenalInputError):
        bedside_schwartz(F(age), F(120), F("0.5"), RENAL.bedside_schwartz)
