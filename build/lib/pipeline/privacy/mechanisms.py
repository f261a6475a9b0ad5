"""Differential-privacy mechanisms through OpenDP: scales, thresholds, vectorised noise, privacy loss.

Guarantees:
- Every noise value is drawn by an OpenDP measurement (``make_laplace`` / ``make_gaussian``,
  discrete for integer counts), vectorised over all cells of one metric; nothing here samples
  noise by hand. OpenDP draws from the operating system's CSPRNG, so noise cannot be replayed.
- Every privacy loss is what the OpenDP measurement's own privacy map says for the stated
  sensitivity (``measurement.map(d_in)``), not a restated formula; the ledger records those numbers.
- Partition-selection thresholds are the smallest integers for which OpenDP's threshold
  mechanism's map gives delta at most the target.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

CHUNK = 65_536  # at most this many cells per OpenDP call; chunks run on worker threads (OpenDP releases the GIL)
Z95_LAPLACE = math.log(20.0)  # P(|Lap(b)| > b·ln 20) = 5%
Z95_GAUSSIAN = 1.959963984540054


@lru_cache(maxsize=1)
def _dp() -> Any:
    """The OpenDP names used here, with "contrib" enabled.

    Imported module by module: ``opendp.prelude`` also imports the sklearn/numpy/polars extras,
    ~0.1 s of start-up this pipeline never uses.
    """
    from types import SimpleNamespace

    import opendp.combinators as c
    import opendp.domains as domains
    import opendp.measurements as m
    import opendp.metrics as metrics
    import opendp.mod as mod
    import opendp.typing as typing

    mod.enable_features("contrib")
    return SimpleNamespace(
        m=m, c=c, i64=typing.i64,
        vector_domain=domains.vector_domain, atom_domain=domains.atom_domain, map_domain=domains.map_domain,
        l1_distance=metrics.l1_distance, l2_distance=metrics.l2_distance,
        absolute_distance=metrics.absolute_distance,
        l01inf_distance=metrics.l01inf_distance, l02inf_distance=metrics.l02inf_distance,
    )


@dataclass(frozen=True)
class Mechanism:
    """One noisy query: its sensitivity, noise scale, and the loss OpenDP's privacy map reports."""

    name: str
    noise: str  # laplace | gaussian
    integer: bool
    sensitivity: float  # L1 (laplace) or L2 (gaussian) over the whole cell vector
    scale: float
    epsilon: float = 0.0  # pure-DP loss (laplace)
    rho: float = 0.0  # zCDP loss (gaussian)
    delta: float = 0.0  # only threshold mechanisms have a delta of their own
    threshold: int | None = None

    @property
    def ci95_half_width(self) -> float:
        return self.scale * (Z95_LAPLACE if self.noise == "laplace" else Z95_GAUSSIAN)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci95_half_width"] = self.ci95_half_width
        return d


# ----- building measurements -------------------------------------------------------------------


@lru_cache(maxsize=64)
def _vector_measurement(noise: str, integer: bool, scale: float) -> Any:
    dp = _dp()
    if integer:
        domain = dp.vector_domain(dp.atom_domain(T=dp.i64))
    else:
        domain = dp.vector_domain(dp.atom_domain(T=float, nan=False))
    if noise == "laplace":
        metric = dp.l1_distance(T=dp.i64 if integer else float)
        return dp.m.make_laplace(domain, metric, scale=scale)
    return dp.m.make_gaussian(domain, dp.l2_distance(T=float), scale=scale)


def vector_mechanism(name: str, noise: str, *, integer: bool, sensitivity: float, scale: float) -> Mechanism:
    """Describe a vector Laplace/Gaussian query; the loss comes from OpenDP's privacy map."""
    meas = _vector_measurement(noise, integer, float(scale))
    if noise == "laplace":
        d_in = int(math.ceil(sensitivity)) if integer else float(sensitivity)
        return Mechanism(name, noise, integer, float(sensitivity), float(scale), epsilon=float(meas.map(d_in)))
    return Mechanism(name, noise, integer, float(sensitivity), float(scale), rho=float(meas.map(float(sensitivity))))


def scale_for_budget(noise: str, sensitivity: float, budget: float) -> float:
    """Noise scale spending exactly ``budget`` (epsilon for laplace, rho for gaussian)."""
    if noise == "laplace":
        return sensitivity / budget
    return sensitivity / math.sqrt(2.0 * budget)


@lru_cache(maxsize=256)
def threshold_loss(noise: str, scale: float, threshold: int, l0: int) -> tuple[float, float]:
    """(epsilon or rho, delta) of OpenDP's threshold mechanism for a unit touching ``l0`` cells once."""
    dp = _dp()
    domain = dp.map_domain(dp.atom_domain(T=dp.i64), dp.atom_domain(T=dp.i64))
    if noise == "laplace":
        m = dp.m.make_laplace_threshold(domain, dp.l01inf_distance(dp.absolute_distance(T=dp.i64)),
                                        scale=float(scale), threshold=int(threshold))
        loss, delta = m.map((int(l0), int(l0), 1))
    else:
        m = dp.m.make_gaussian_threshold(domain, dp.l02inf_distance(dp.absolute_distance(T=dp.i64)),
                                         scale=float(scale), threshold=int(threshold))
        # d_in = (l0, l1, linf): OpenDP bounds the L2 sensitivity by sqrt(l0)·linf itself
        loss, delta = m.map((int(l0), int(l0), 1))
    return float(loss), float(delta)


def selection_mechanism(noise: str, *, l0: int, budget: float, delta: float) -> Mechanism:
    """Private partition selection on distinct-unit counts (each unit adds 1 to at most ``l0`` cells).

    Scale from the budget share; threshold = smallest integer whose delta (OpenDP's map) is
    at most ``delta``. A cell is released only if its noisy count reaches the threshold.
    """
    sens = float(l0) if noise == "laplace" else math.sqrt(l0)
    scale = scale_for_budget(noise, sens, budget)
    lo, hi = 1, 2
    while threshold_loss(noise, scale, hi, l0)[1] > delta:
        lo, hi = hi, hi * 2
        if hi > 2**40:
            raise ValueError("no partition-selection threshold reaches this delta")
    while lo < hi:  # smallest threshold with delta <= target
        mid = (lo + hi) // 2
        if threshold_loss(noise, scale, mid, l0)[1] <= delta:
            hi = mid
        else:
            lo = mid + 1
    loss, d = threshold_loss(noise, scale, hi, l0)
    if noise == "laplace":
        return Mechanism("partition_selection", noise, True, sens, scale, epsilon=loss, delta=d, threshold=hi)
    return Mechanism("partition_selection", noise, True, sens, scale, rho=loss, delta=d, threshold=hi)


# ----- drawing noise ---------------------------------------------------------------------------


def _workers() -> int:
    """Threads for OpenDP sampling: the CPUs this process may use (at least 1)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover (not Linux)
        return max(1, os.cpu_count() or 1)


def add_noise(values: np.ndarray, mech: Mechanism) -> np.ndarray:
    """``values`` plus OpenDP noise of ``mech`` (int64 for integer mechanisms, float64 otherwise)."""
    n = len(values)
    if n == 0:
        return values.astype(np.int64 if mech.integer else np.float64)
    meas = _vector_measurement(mech.noise, mech.integer, float(mech.scale))
    data = np.asarray(values, dtype=np.int64 if mech.integer else np.float64)
    if not mech.integer and not np.isfinite(data).all():
        # OpenDP does not check its input domain when invoked (a NaN comes back as a number);
        # aggregates are built from finite clamped values, so this is a bug: refuse, never publish
        from ..errors import ReleaseError

        raise ReleaseError(f"{mech.name}: a non-finite aggregate reached the noise stage; nothing was published")
    workers = _workers()
    # equal chunks, a multiple of the workers: 94k cells on 2 threads are 2 × 47k, not 65k + 29k
    n_chunks = max(1, -(-n // CHUNK))
    if n >= 256 and workers > 1:  # float samplers take ~50 µs: even 1k published cells are worth splitting
        n_chunks = -(-n_chunks // workers) * workers
    chunks = np.array_split(data, n_chunks)

    def run(chunk: np.ndarray) -> list:
        # a contiguous int64/float64 ndarray goes to OpenDP as a buffer: converting it to a list
        # element by element ran under the GIL and serialised the worker threads
        return meas(np.ascontiguousarray(chunk))

    if len(chunks) == 1:
        out = [run(chunks[0])]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            out = list(pool.map(run, chunks))
    return np.concatenate([np.asarray(o, dtype=data.dtype) for o in out])


# ----- noise distributions (pure, vectorised) ----------------------------------------------------


def discrete_laplace_sf(m: np.ndarray, scale: float) -> np.ndarray:
    """P(Z >= m) for integer ``m`` and Z ~ discrete Laplace, P(Z = z) ∝ exp(-|z| / scale)."""
    m = np.asarray(m, dtype=np.float64)
    q = math.exp(-1.0 / scale)
    with np.errstate(over="ignore", under="ignore"):
        upper = np.power(q, np.maximum(m, 1.0)) / (1.0 + q)  # m >= 1
        lower = 1.0 - np.power(q, np.maximum(1.0 - m, 1.0)) / (1.0 + q)  # m <= 0
    return np.where(m >= 1, upper, lower)


def discrete_gaussian_sf(m: np.ndarray, sigma: float) -> np.ndarray:
    """P(Z >= m) for integer ``m`` and Z ~ discrete Gaussian, P(Z = z) ∝ exp(-z² / (2σ²)).

    Exact summation of the normalised mass over ±(12σ + 10); beyond σ = 10⁴ the continuous normal
    with a continuity correction (its error there is far below anything shown or tested).
    """
    m = np.asarray(m, dtype=np.float64)
    if sigma > 1e4:
        erfc = np.vectorize(math.erfc, otypes=[np.float64])
        return 0.5 * erfc((m - 0.5) / (sigma * math.sqrt(2.0)))
    half = int(math.ceil(12 * sigma)) + 10
    z = np.arange(-half, half + 1, dtype=np.float64)
    mass = np.exp(-(z * z) / (2.0 * sigma * sigma))
    mass /= mass.sum()
    sf = np.cumsum(mass[::-1])[::-1]  # sf[i] = P(Z >= z[i])
    idx = np.clip(m + half, 0, 2 * half + 1).astype(np.int64)
    sf = np.append(sf, 0.0)  # index 2·half+1: beyond the support
    return sf[idx]


def abs_exceed_probability(mech: Mechanism, t: float) -> float:
    """P(|Z| > t) for one draw Z of ``mech``'s noise (t >= 0); exact for the discrete samplers OpenDP
    uses on integers (for an integer Z, |Z| > t iff |Z| >= floor(t) + 1)."""
    t = max(float(t), 0.0)
    b = float(mech.scale)
    if b <= 0:
        return 0.0
    if mech.integer:
        m = math.floor(t) + 1
        if mech.noise == "laplace":
            q = math.exp(-1.0 / b)
            return min(1.0, 2.0 * q**m / (1.0 + q))
        return min(1.0, 2.0 * float(discrete_gaussian_sf(np.array([m]), b)[0]))
    if mech.noise == "laplace":
        return math.exp(-t / b)
    return math.erfc(t / (b * math.sqrt(2.0)))


# The release gate's noise check (gate._noise_check): a published DP value farther from the true
# value it was drawn from than this tail, or a spread of deviations this unlikely, refuses the run.
GATE_TAIL = 1e-12


@lru_cache(maxsize=256)
def _tail_bound(noise: str, integer: bool, scale: float, p: float) -> float:
    mech = Mechanism("tail", noise, integer, 0.0, scale)
    lo, hi = 0.0, max(scale, 1.0)
    while abs_exceed_probability(mech, hi) > p:
        hi *= 2.0
    for _ in range(100):
        mid = (lo + hi) / 2.0
        if abs_exceed_probability(mech, mid) > p:
            lo = mid
        else:
            hi = mid
    return float(math.floor(hi)) if integer else hi


def tail_bound(mech: Mechanism, p: float = GATE_TAIL) -> float:
    """A t with P(|Z| > t) <= ``p`` for one draw of ``mech``'s noise (within 1e-30 relative of the
    smallest such t; an integer for integer mechanisms)."""
    return _tail_bound(mech.noise, bool(mech.integer), float(mech.scale), float(p))


def binomial_surprise(k: int, n: int, p_low: float, p_high: float) -> float:
    """-ln of the Chernoff bound on seeing ``k`` or more (or fewer) events in ``n`` independent trials
    whose probability lies in [p_low, p_high]: n·KL(k/n ‖ p) against the nearer end, 0 inside.

    P(X >= k) <= exp(-n·KL(k/n ‖ p)) for k/n >= p, and likewise below: a surprise above
    ``ln(1 / GATE_TAIL)`` happens with probability below ``GATE_TAIL`` when the trials are as stated.
    """
    if n <= 0:
        return 0.0
    x = k / n

    def kl(x: float, p: float) -> float:
        if p <= 0.0:
            return 0.0 if x <= 0.0 else math.inf
        if p >= 1.0:
            return 0.0 if x >= 1.0 else math.inf
        a = x * math.log(x / p) if x > 0 else 0.0
        b = (1 - x) * math.log((1 - x) / (1 - p)) if x < 1 else 0.0
        return a + b

    if x > p_high:
        return n * kl(x, p_high)
    if x < p_low:
        return n * kl(x, p_low)
    return 0.0


# ----- accounting ------------------------------------------------------------------------------


def zcdp_to_approx_epsilon(rho: float, delta: float) -> float:
    """Epsilon of a rho-zCDP mechanism at ``delta``, from OpenDP's conversion (a profile curve)."""
    if rho <= 0:
        return 0.0
    dp = _dp()
    # a unit-sensitivity Gaussian whose map is exactly rho gives OpenDP's conversion curve
    scale = 1.0 / math.sqrt(2.0 * rho)
    meas = dp.c.make_zCDP_to_approxDP(_vector_measurement("gaussian", False, scale))
    return float(meas.map(1.0).epsilon(delta))


def _cks_epsilon(rho: float, delta: float) -> float:
    """ε of ρ-zCDP at δ by Canonne, Kamath & Steinke (2020), Prop. 12: a fast numeric minimum over α.

    Used only to *search* for ρ; the ε that is recorded always comes from OpenDP's conversion.
    """
    import numpy as np

    alpha = 1.0 + np.geomspace(1e-6, 1e6, 4000)
    vals = alpha * rho + (math.log(1.0 / delta) + (alpha - 1) * np.log1p(-1.0 / alpha) - np.log(alpha)) / (alpha - 1)
    return float(max(vals.min(), 0.0))


@lru_cache(maxsize=256)
def rho_for_epsilon(epsilon: float, delta: float) -> float:
    """Largest rho (to a relative 1e-6) whose OpenDP conversion to (ε, δ)-DP stays within ``epsilon``.

    Bisection on the fast CKS bound, then checked against OpenDP's own conversion and shrunk
    until OpenDP agrees, so the result is always feasible by OpenDP's accounting.
    """
    lo, hi = 0.0, max(epsilon, 1e-6)
    while _cks_epsilon(hi, delta) < epsilon:
        hi *= 2
    while hi - lo > 1e-7 * hi:
        mid = (lo + hi) / 2
        if _cks_epsilon(mid, delta) <= epsilon:
            lo = mid
        else:
            hi = mid
    rho = lo
    for _ in range(200):
        if zcdp_to_approx_epsilon(rho, delta) <= epsilon:
            return rho
        rho *= 1 - 1e-4
    raise ValueError(f"no zCDP budget converts to ε={epsilon} at δ={delta}")
