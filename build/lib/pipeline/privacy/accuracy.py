"""Accuracy maths for ``plan``: publication probabilities and expected errors of DP releases (pure).

Exact for the discrete samplers OpenDP uses on counts (discrete Laplace / Gaussian tails and mean
absolute values), closed forms for continuous noise; vectorised over cells. No data, no engine.
"""

from __future__ import annotations

import math

import numpy as np

from .mechanisms import Mechanism, discrete_gaussian_sf, discrete_laplace_sf

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)  # E|N(0, 1)|


def publish_probability(units: np.ndarray, mech: Mechanism, threshold: int) -> np.ndarray:
    """Probability per cell that ``units + noise >= threshold`` under the selection mechanism."""
    need = threshold - np.asarray(units, dtype=np.float64)  # the noise must reach at least this
    if mech.noise == "laplace":
        return discrete_laplace_sf(need, mech.scale)
    return discrete_gaussian_sf(need, mech.scale)


def expected_abs_noise(mech: Mechanism) -> float:
    """E|noise| of one draw: b (Laplace), σ·√(2/π) (Gaussian); exact for the discrete versions
    used on integer counts (2q/(1 − q²) with q = e^{-1/b}; a normalised sum for the discrete Gaussian)."""
    scale = float(mech.scale)
    if mech.noise == "laplace":
        if not mech.integer:
            return scale
        q = math.exp(-1.0 / scale)
        return 2.0 * q / (1.0 - q * q)
    if not mech.integer or scale > 1e4:
        return scale * SQRT_2_OVER_PI
    half = int(math.ceil(12 * scale)) + 10
    z = np.arange(-half, half + 1, dtype=np.float64)
    mass = np.exp(-(z * z) / (2.0 * scale * scale))
    return float((np.abs(z) * mass).sum() / mass.sum())


def expected_abs_difference(noise: str, s1: float, s2: np.ndarray) -> np.ndarray:
    """E|X − Y| for independent continuous X, Y with scales ``s1`` and ``s2`` (Laplace b or Gaussian σ).

    Laplace: (s1² + s1·s2 + s2²) / (s1 + s2), from P(|X − Y| > w) = (s1²e^{-w/s1} − s2²e^{-w/s2}) / (s1² − s2²).
    Gaussian: √(2/π)·√(s1² + s2²).
    """
    s2 = np.abs(np.asarray(s2, dtype=np.float64))
    if noise != "laplace":
        return SQRT_2_OVER_PI * np.sqrt(s1 * s1 + s2 * s2)
    total = s1 + s2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, (s1 * s1 + s1 * s2 + s2 * s2) / np.where(total > 0, total, 1.0), 0.0)


def median_relative(err: np.ndarray, true: np.ndarray) -> float | None:
    """Median over cells of err/|true| (None when there are no cells or the median is infinite)."""
    if len(err) == 0:
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(np.abs(true) > 0, err / np.abs(true), np.inf)
    med = float(np.median(rel))
    return med if math.isfinite(med) else None
