"""The realistic fixtures against their golden results in fixtures/expected/ (the native
``$check`` Bundle and the CDS Hooks cards, volatile values removed; tests/support/golden.py).
A difference prints the diff and the command that regenerates the files: ``make golden``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient

from tests.support.golden import Case, actual, cases, difference, golden_app

CASES = cases()


@pytest.fixture(scope="module")
def golden_client() -> Iterator[FlaskClient]:
    yield golden_app().test_client()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_answer_is_the_golden_result(golden_client: FlaskClient, case: Case) -> None:
    problem = difference(case, actual(case, golden_client))
    if problem:
        pytest.fail(problem, pytrace=False)


def test_every_fixture_has_a_golden_file() -> None:
    missing = [c.name for c in CASES if not c.path.exists()]
    assert not missing, f"no golden file for {missing}: run `make golden`"
