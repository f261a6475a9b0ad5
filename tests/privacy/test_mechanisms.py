"""The zCDP budget search of Gaussian releases: the ρ it returns is feasible by OpenDP's own
conversion and as large as that allows (a smaller ρ wastes accuracy, a larger one overspends)."""

from __future__ import annotations

import pytest

from pipeline.privacy.mechanisms import _cks_epsilon, rho_for_epsilon, zcdp_to_approx_epsilon

CASES = [(1.0, 1e-6), (0.1, 1e-9), (5.0, 1e-5), (0.5, 1e-7), (2.0, 1e-8)]


@pytest.mark.parametrize(("epsilon", "delta"), CASES)
def test_rho_is_feasible_and_tight_by_opendps_conversion(epsilon: float, delta: float) -> None:
    rho = rho_for_epsilon(epsilon, delta)
    assert zcdp_to_approx_epsilon(rho, delta) <= epsilon  # never overspends
    assert zcdp_to_approx_epsilon(rho * 1.001, delta) > epsilon  # and leaves nothing on the table


@pytest.mark.parametrize(("epsilon", "delta"), CASES)
def test_the_fast_search_bound_agrees_with_opendp(epsilon: float, delta: float) -> None:
    """The numeric CKS minimum the search uses matches OpenDP's conversion to within 0.01%."""
    for rho in (rho_for_epsilon(epsilon, delta), rho_for_epsilon(epsilon, delta) / 3):
        assert _cks_epsilon(rho, delta) == pytest.approx(zcdp_to_approx_epsilon(rho, delta), rel=1e-4)
