"""Customer lifetime value: BG/NBD purchase model and Gamma-Gamma spend model.

Pure numpy/scipy functions (no Odoo import), vectorised over customers: no Python
loop runs over customers anywhere; the only loops run over a handful of horizons.
The time unit is the day (any unit works as long as ``t_x``, ``T``, ``t`` and
``alpha`` share it).

References
----------
[BG/NBD] P. S. Fader, B. G. S. Hardie, K. L. Lee (2005), "Counting Your Customers"
    the Easy Way: An Alternative to the Pareto/NBD Model, Marketing Science 24(2),
    275-284, and the companion note "Implementing the BG/NBD Model for Customer Base
    Analysis in Excel" (the A1..A4 decomposition of the likelihood).
[GG] P. S. Fader, B. G. S. Hardie, K. L. Lee (2005), RFM and CLV: Using Iso-Value
    Curves for Customer Base Analysis, Journal of Marketing Research 42(4), 415-430,
    and B. G. S. Hardie, "The Gamma-Gamma Model of Monetary Value" (2013 note), as
    implemented by the ``lifetimes`` package.

Per customer, the BG/NBD inputs are ``x`` (number of *repeat* purchases), ``t_x``
(time of the last purchase, counted from the first purchase; 0 when ``x == 0``)
and ``T`` (time from the first purchase to the end of the observation window).
Fits accept ``weights``: the number of customers sharing an identical row, so that
the caller can compress its data with ``GROUP BY x, t_x, T``.

Parameters are returned as dicts and accepted either as such dicts or as tuples
``(r, alpha, a, b)`` / ``(p, q, v)``.
"""

import math

import numpy as np
from scipy import linalg, optimize, special

__all__ = [
    "bgnbd_expected_purchases",
    "bgnbd_log_likelihood",
    "bgnbd_p_alive",
    "bgnbd_unconditional_expected",
    "customer_lifetime_value",
    "fit_bgnbd",
    "fit_gamma_gamma",
    "gamma_gamma_expected_value",
    "gamma_gamma_log_likelihood",
    "simulate_bgnbd",
    "simulate_gamma_gamma",
]

#: Fits refuse fewer customers than this (sum of the weights).
MIN_CUSTOMERS = 10

# Bounds of the optimiser on the *log* of each parameter. They only exist so that
# exp() cannot overflow; a fit that ends on one of them is reported by ``at_bound``
# (typically b -> infinity: no drop-out visible in the data).
_LOG_BOUNDS = (math.log(1e-8), math.log(1e8))
_LOG_BOUNDS_SCALE = (math.log(1e-8), math.log(1e12))  # alpha / v carry the data's unit

# Eq. 10 has a removable singularity at a == 1 (a (1 - 2F1)/(a - 1) form). Within
# this distance of 1 the value is interpolated linearly between a = 1 -/+ delta.
_A_SINGULAR_HALF_WIDTH = 1e-4

# Tolerances of L-BFGS-B on the *mean* negative log-likelihood per customer. Tighter
# ones (1e-14, 1e-9) only added failed line searches at the end: twice the
# evaluations for a nightly refit of 1,000,000 customers, parameters within 5e-6.
_LBFGS_OPTIONS = {"maxiter": 1000, "ftol": 1e-12, "gtol": 1e-7, "maxcor": 20}
_GRADIENT_CONVERGED = 1e-6
# Newton steps from a warm start (see _newton): relative step of the Hessian's finite
# differences, most steps, longest step (log-parameters) before L-BFGS-B takes over.
_NEWTON_DIFFERENCE = 1e-6
_NEWTON_STEPS = 4
_NEWTON_MAX_STEP = 0.5


# Steps of the customer lifetime value's discounting (a month).
CLV_STEP_DAYS = 30


def _dot(u, v):
    """Inner product of two vectors without BLAS.

    np.dot goes through OpenBLAS, which runs vectors of a few 10^4 elements on a
    thread pool; on a busy server (Odoo workers, 2 cores) those threads wait for
    CPU and an evaluation gets 10-50x slower. einsum's own loop does not thread.
    """
    return float(np.einsum("i,i->", u, v))


# --------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------


def _positive_params(values, names):
    out = tuple(float(v) for v in values)
    for name, value in zip(names, out, strict=True):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"parameter {name} must be a finite positive number, got {value!r}")
    return out


def _bgnbd_params(params):
    """(r, alpha, a, b) from a fit_bgnbd() dict or a 4-sequence."""
    names = ("r", "alpha", "a", "b")
    if isinstance(params, dict):
        params = [params[name] for name in names]
    if len(params) != 4:
        raise ValueError("BG/NBD parameters are (r, alpha, a, b)")
    return _positive_params(params, names)


def _gg_params(params):
    """(p, q, v) from a fit_gamma_gamma() dict or a 3-sequence."""
    names = ("p", "q", "v")
    if isinstance(params, dict):
        params = [params[name] for name in names]
    if len(params) != 3:
        raise ValueError("Gamma-Gamma parameters are (p, q, v)")
    return _positive_params(params, names)


def _float_array(name, values):
    arr = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _check_rft(x, t_x, T):
    """Validate and broadcast BG/NBD inputs (repeat count, recency, age)."""
    x = _float_array("x", x)
    t_x = _float_array("t_x", t_x)
    T = _float_array("T", T)
    x, t_x, T = np.broadcast_arrays(x, t_x, T)
    if np.any(x < 0) or np.any(x != np.floor(x)):
        raise ValueError("x (number of repeat purchases) must hold non-negative integers")
    if np.any(t_x < 0):
        raise ValueError("t_x (time of the last purchase) must be >= 0")
    if np.any(t_x > T):
        raise ValueError("t_x (time of the last purchase) must not exceed T (customer age)")
    return x, t_x, T


def _check_weights(weights, n):
    if weights is None:
        return np.ones(n)
    weights = _float_array("weights", weights).ravel()
    if weights.shape != (n,):
        raise ValueError(f"weights must have one value per row ({n}), got {weights.shape}")
    if np.any(weights < 0):
        raise ValueError("weights (customers per row) must be >= 0")
    return weights


def _fit_arrays(x, t_x, T, weights):
    """1-D arrays for a fit; rows with zero weight are dropped."""
    x, t_x, T = (np.ravel(a) for a in _check_rft(x, t_x, T))
    weights = _check_weights(weights, x.shape[0])
    keep = weights > 0
    if not np.all(keep):
        x, t_x, T, weights = x[keep], t_x[keep], T[keep], weights[keep]
    return x, t_x, T, weights


def _check_enough(n_customers, what):
    if n_customers == 0:
        raise ValueError(f"cannot fit the {what} model on empty input (no customers)")
    if n_customers < MIN_CUSTOMERS:
        raise ValueError(
            f"cannot fit the {what} model on {n_customers:g} customers: "
            f"at least {MIN_CUSTOMERS} are needed"
        )


def _cached(fun_and_grad):
    """Remember the last evaluation (L-BFGS-B and the final checks repeat it)."""
    last = {}

    def wrapper(theta):
        key = np.asarray(theta, dtype=float).tobytes()
        if last.get("key") != key:
            last["key"], last["value"] = key, fun_and_grad(theta)
        return last["value"]

    return wrapper


def _projected_gradient_small(theta, grad, lower, upper):
    """True when the gradient, ignoring components pushing against a bound, is ~0."""
    grad = np.where((theta <= lower + 1e-9) & (grad > 0), 0.0, grad)
    grad = np.where((theta >= upper - 1e-9) & (grad < 0), 0.0, grad)
    return float(np.max(np.abs(grad))) < _GRADIENT_CONVERGED


def _newton(fun_and_grad, theta, value, grad, lower, upper):
    """Newton steps from ``theta`` (``value`` and ``grad`` there), for a warm start
    near the optimum: the Hessian by forward differences of the analytic gradient
    (one evaluation per parameter), factorised once and used for every step.

    Returns (theta, value, grad, steps) once the projected gradient is ~0, or None
    when the start is not near enough: a Hessian that is not positive definite, a
    step longer than _NEWTON_MAX_STEP or leaving the bounds, a step that does not
    lower the objective, or _NEWTON_STEPS steps without converging.
    """
    differences = _NEWTON_DIFFERENCE * np.maximum(1.0, np.abs(theta))
    hessian = np.empty((theta.size, theta.size))
    for index, difference in enumerate(differences):
        moved = theta.copy()
        moved[index] += difference
        hessian[:, index] = (fun_and_grad(moved)[1] - grad) / difference
    try:
        factor = linalg.cho_factor((hessian + hessian.T) / 2)
    except linalg.LinAlgError:
        return None
    for steps in range(1, _NEWTON_STEPS + 1):
        step = -linalg.cho_solve(factor, grad)
        moved = theta + step
        if (
            not np.all(np.isfinite(step))
            or np.max(np.abs(step)) > _NEWTON_MAX_STEP
            or np.any(moved < lower)
            or np.any(moved > upper)
        ):
            return None
        moved_value, moved_grad = fun_and_grad(moved)
        # (a step from ~the optimum may only move the value by its rounding)
        if not moved_value <= value + 1e-14 * max(1.0, abs(value)):
            return None
        theta, value, grad = moved, moved_value, moved_grad
        if _projected_gradient_small(theta, grad, lower, upper):
            return theta, value, grad, steps
    return None


def _minimize(fun_and_grad, theta0, bounds, warm=False):
    """Minimise a mean negative log-likelihood over log-parameters.

    With ``warm`` (a start from an earlier fit, typically the last night's), Newton
    steps first (see ``_newton``): from near the optimum they converge in one or two
    steps, where L-BFGS-B, learning the curvature as it goes, takes a dozen
    iterations (nightly refit of 100,000 customers: 7 evaluations: the start, 4 for the
    Hessian, 2 steps; L-BFGS-B took 14).
    Otherwise, or when they fail, L-BFGS-B with the analytic gradient; when it stops
    without meeting its criteria and the projected gradient is not ~0, a Nelder-Mead
    polish follows. Returns (theta, mean_nll, converged, iterations, at_bound).
    """
    fun_and_grad = _cached(fun_and_grad)
    lower = np.array([bound[0] for bound in bounds])
    upper = np.array([bound[1] for bound in bounds])
    theta = np.clip(np.asarray(theta0, dtype=float), lower, upper)
    iterations = 0
    value, grad = fun_and_grad(theta)
    # A start at the optimum (a warm start on unchanged data) is kept as it is: L-BFGS-B
    # would only fail its line search there, after some thirty evaluations.
    converged = _projected_gradient_small(theta, grad, lower, upper)
    if not converged and warm:
        newton = _newton(fun_and_grad, theta, value, grad, lower, upper)
        if newton:
            theta, value, grad, iterations = newton
            converged = True
    if not converged:
        res = optimize.minimize(
            fun_and_grad, theta, jac=True, method="L-BFGS-B", bounds=bounds, options=_LBFGS_OPTIONS
        )
        theta, iterations = res.x, int(res.nit)
        value, grad = fun_and_grad(theta)
        converged = bool(res.success) or _projected_gradient_small(theta, grad, lower, upper)
    if not converged:
        polish = optimize.minimize(
            lambda th: fun_and_grad(th)[0],
            theta,
            method="Nelder-Mead",
            bounds=bounds,
            options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 4000},
        )
        iterations += int(polish.nit)
        if polish.fun <= value:
            theta = polish.x
        value, grad = fun_and_grad(theta)
        converged = _projected_gradient_small(theta, grad, lower, upper)
    at_bound = bool(np.any((theta - lower < 1e-6) | (upper - theta < 1e-6)))
    return theta, float(value), converged, iterations, at_bound


# --------------------------------------------------------------------------------------
# BG/NBD
# --------------------------------------------------------------------------------------


def bgnbd_log_likelihood(params, x, t_x, T, weights=None):
    """Per-customer BG/NBD log-likelihood (Fader, Hardie & Lee 2005, eq. 6).

    With ``L = A1 * A2 * (A3 + [x > 0] * A4)`` where::

        ln A1 = ln G(r + x) - ln G(r) + r ln(alpha)
        ln A2 = ln G(a + b) + ln G(b + x) - ln G(b) - ln G(a + b + x)
        ln A3 = -(r + x) ln(alpha + T)
        ln A4 = ln(a) - ln(b + x - 1) - (r + x) ln(alpha + t_x)     (x > 0 only)

    computed with ``gammaln`` and ``logaddexp`` (no overflow for large x or T).
    Returns an array shaped like the broadcast inputs; with ``weights`` each value is
    multiplied by its weight, so that ``.sum()`` is the total log-likelihood.
    """
    r, alpha, a, b = _bgnbd_params(params)
    x, t_x, T = _check_rft(x, t_x, T)
    rx = r + x
    ln_a1 = special.gammaln(rx) - special.gammaln(r) + r * math.log(alpha)
    ln_a2 = (
        special.gammaln(a + b)
        + special.gammaln(b + x)
        - special.gammaln(b)
        - special.gammaln(a + b + x)
    )
    ln_a3 = -rx * np.log(alpha + T)
    with np.errstate(divide="ignore", invalid="ignore"):
        ln_a4 = math.log(a) - np.log(b + x - 1) - rx * np.log(alpha + t_x)
    ln_a4 = np.where(x > 0, ln_a4, -np.inf)
    ll = ln_a1 + ln_a2 + np.logaddexp(ln_a3, ln_a4)
    if weights is not None:
        ll = ll * _check_weights(weights, ll.size).reshape(ll.shape)
    return ll


class _ValueTable:
    """Values of a per-row column, stored as distinct values + row index when that
    saves work (integer days: a few thousand distinct T among 10^6 rows)."""

    def __init__(self, values):
        uniq, inverse = np.unique(values, return_inverse=True)
        if uniq.size * 4 <= values.size:
            self.values, self.index = uniq, inverse.ravel()
        else:
            self.values, self.index = values, None

    def log_and_inverse(self, shift):
        """Per-row ln(shift + value) and 1 / (shift + value)."""
        s = self.values + shift
        log_s, inv_s = np.log(s), np.reciprocal(s)
        if self.index is None:
            return log_s, inv_s
        return log_s[self.index], inv_s[self.index]


class _BgnbdObjective:
    """Mean negative log-likelihood of eq. 6 and its gradient on log-parameters.

    The terms that depend on x only (A1 without alpha, A2) are summed once per
    distinct x value with the total weight of that value, the x == 0 rows once per
    distinct T. Per repeat buyer the likelihood is written with the log-odds
    ``d = ln A4 - ln A3 = ln(a / (b + x - 1)) + (r + x) ln((alpha + T) / (alpha + t_x))``
    as ``ln(A3 + A4) = -(r + x) ln(alpha + T) + softplus(d)``, and the derivatives
    use ``w4 = expit(d)`` (the posterior probability of having dropped out).
    """

    def __init__(self, x, t_x, T, w):
        self.n = float(w.sum())
        self.ux, inverse = np.unique(x, return_inverse=True)
        self.wx = np.bincount(inverse.ravel(), weights=w, minlength=self.ux.size)
        pos = x > 0
        # x == 0 rows: aggregate the weights per distinct T
        self.uT0, inverse0 = np.unique(T[~pos], return_inverse=True)
        self.wT0 = np.bincount(inverse0.ravel(), weights=w[~pos], minlength=self.uT0.size)
        # x > 0 rows
        x1 = x[pos]
        self.ux1, self.ix1 = np.unique(x1, return_inverse=True)
        self.ix1 = self.ix1.ravel()
        self.x1, self.w1, self.wx1 = x1, w[pos], w[pos] * x1
        self.sum_w1 = float(self.w1.sum())
        self.T1 = _ValueTable(T[pos])
        self.tx1 = _ValueTable(t_x[pos])

    def __call__(self, theta):
        r, alpha, a, b = np.exp(theta)
        ux, wx = self.ux, self.wx
        dg = special.digamma
        # x-only terms, once per distinct x
        ll = _dot(
            wx,
            special.gammaln(r + ux)
            - special.gammaln(r)
            + special.gammaln(a + b)
            + special.gammaln(b + ux)
            - special.gammaln(b)
            - special.gammaln(a + b + ux),
        ) + self.n * r * math.log(alpha)
        g_r = _dot(wx, dg(r + ux) - dg(r)) + self.n * math.log(alpha)
        g_alpha = self.n * r / alpha
        g_a = _dot(wx, dg(a + b) - dg(a + b + ux))
        g_b = _dot(wx, dg(a + b) + dg(b + ux) - dg(b) - dg(a + b + ux))
        # x == 0 rows: ln A3 = -r ln(alpha + T)
        if self.uT0.size:
            log_t0 = np.log(alpha + self.uT0)
            ll -= r * _dot(self.wT0, log_t0)
            g_r -= _dot(self.wT0, log_t0)
            g_alpha -= r * _dot(self.wT0, 1.0 / (alpha + self.uT0))
        # x > 0 rows: ln(A3 + A4) = ln A3 + softplus(d)
        if self.x1.size:
            x1, w1, wx1 = self.x1, self.w1, self.wx1
            log_t, inv_t = self.T1.log_and_inverse(alpha)
            log_tx, inv_tx = self.tx1.log_and_inverse(alpha)
            log_ratio = log_t - log_tx
            inv_bx1 = 1.0 / (b + self.ux1 - 1)
            d = x1 + r
            d *= log_ratio
            d += (math.log(a) + np.log(inv_bx1))[self.ix1]
            w4 = special.expit(d)
            ww4 = w1 * w4
            ll += _dot(w1, np.logaddexp(0.0, d)) - r * _dot(w1, log_t) - _dot(wx1, log_t)
            g_r += _dot(ww4, log_ratio) - _dot(w1, log_t)
            inv_tx -= inv_t
            g_alpha -= r * _dot(w1, inv_t) + _dot(wx1, inv_t)
            g_alpha -= r * _dot(ww4, inv_tx) + _dot(ww4 * x1, inv_tx)
            g_a += ww4.sum() / a
            g_b -= _dot(np.bincount(self.ix1, weights=ww4, minlength=self.ux1.size), inv_bx1)
        grad = np.array([g_r * r, g_alpha * alpha, g_a * a, g_b * b])
        return -ll / self.n, -grad / self.n


def fit_bgnbd(x, t_x, T, weights=None, initial=None):
    """Maximum-likelihood BG/NBD fit (Fader, Hardie & Lee 2005, eq. 6).

    Minimises the weighted mean negative log-likelihood per customer (scaled by the
    number of customers, so tolerances do not depend on the data size) over the
    logarithms of (r, alpha, a, b), with L-BFGS-B and the analytic gradient; no
    penalizer. If L-BFGS-B stops without meeting its criteria, a Nelder-Mead polish
    follows. ``initial`` is an optional (r, alpha, a, b) start, taken as a warm start
    (Newton steps first, see ``_minimize``); the default start is r = 1, a = 1, b = 1
    and alpha matching the pooled purchase rate sum(x)/sum(T). ``iterations`` counts
    the Newton steps or the L-BFGS-B (and Nelder-Mead) iterations.

    Returns ``{r, alpha, a, b, log_likelihood, converged, iterations, n_customers,
    at_bound}``; ``log_likelihood`` is the total (weighted) log-likelihood,
    ``at_bound`` tells that a parameter ended on the optimiser's safety bound
    (1e-8 .. 1e8, 1e12 for alpha): the data do not identify it, typically no
    visible drop-out (b -> infinity).

    Raises ValueError on empty input, fewer than MIN_CUSTOMERS customers, no repeat
    purchase at all, or invalid rows (t_x > T, negative or non-integer x, ...).
    """
    x, t_x, T, w = _fit_arrays(x, t_x, T, weights)
    n = float(w.sum()) if w.size else 0.0
    _check_enough(n, "BG/NBD")
    if not np.any(x > 0):
        raise ValueError(
            "cannot fit the BG/NBD model: no customer has a repeat purchase (all x == 0), "
            "so the purchase and drop-out processes are not identified"
        )
    warm = initial is not None
    if not warm:
        rate = float(_dot(w, x)) / max(float(_dot(w, T)), 1e-12)
        initial = (1.0, 1.0 / rate, 1.0, 1.0)
    theta0 = np.log(_bgnbd_params(initial))
    objective = _BgnbdObjective(x, t_x, T, w)
    bounds = [_LOG_BOUNDS, _LOG_BOUNDS_SCALE, _LOG_BOUNDS, _LOG_BOUNDS]
    theta, mean_nll, converged, iterations, at_bound = _minimize(
        objective, theta0, bounds, warm=warm
    )
    r, alpha, a, b = (float(v) for v in np.exp(theta))
    return {
        "r": r,
        "alpha": alpha,
        "a": a,
        "b": b,
        "log_likelihood": -mean_nll * objective.n,
        "converged": converged,
        "iterations": iterations,
        "n_customers": n,
        "at_bound": at_bound,
    }


def _log_odds_dead(r, alpha, a, b, x, t_x, T):
    """ln(a / (b + x - 1) * ((alpha + T) / (alpha + t_x))^(r + x)), -inf when x == 0.

    This is the log-odds "dropped out after the last purchase" vs "still alive"
    (the [x > 0] term of P(alive) and of the denominator of eq. 10).
    """
    pos = x > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        log_odds = math.log(a) - np.log(b + x - 1) + (r + x) * np.log1p((T - t_x) / (alpha + t_x))
    return np.where(pos, log_odds, -np.inf)


def bgnbd_p_alive(params, x, t_x, T):
    """P(alive at T | x, t_x, T) (Fader, Hardie & Lee, note "Computing P(alive)
    Using the BG/NBD Model", 2008).

    ``1 / (1 + [x > 0] * a / (b + x - 1) * ((alpha + T) / (alpha + t_x))^(r + x))``,
    evaluated as ``expit(-log_odds)`` so that huge odds give 0 instead of overflow.
    Equals 1 when x == 0 (the model lets customers drop out only after a repeat
    purchase).
    """
    r, alpha, a, b = _bgnbd_params(params)
    x, t_x, T = _check_rft(x, t_x, T)
    return special.expit(-_log_odds_dead(r, alpha, a, b, x, t_x, T))


def _alive_expected_raw(r, alpha, a, b, t, x, T):
    """E[purchases in (T, T + t] | alive at T, x, T] for a != 1 (Euler form of eq. 10).

    Eq. 10's numerator is ``C / (a - 1) * [1 - (1 - z)^(r+x) 2F1(r+x, b+x; C; z)]``
    with ``C = a + b + x - 1`` and ``z = t / (alpha + T + t)``. For large r + x and z
    near 1 this 2F1 overflows (c - a - b = a - 1 - r - x << 0), so Euler's
    transformation ``2F1(A, B; C; z) = (1 - z)^(C-A-B) 2F1(C-A, C-B; C; z)`` is applied:

        (1 - z)^(r+x) 2F1(r+x, b+x; C; z) = (1 - z)^(a-1) 2F1(a+b-1-r, a-1; C; z)

    whose parameters no longer grow with x (checked against mpmath at 40 digits:
    relative error below 1e-9 for x <= 2000, T, t <= 10^4 days, r in 0.01..50,
    alpha in 0.05..5000, a in 0.01..30, b in 0.01..1000). Where C < 1/2 (x == 0 and
    a + b < 3/2, which includes the pole C == 0 at a + b == 1) the contiguous
    identity ``E_Beta(a,b)[f] = b/(a+b) E_Beta(a,b+1)[f] + a/(a+b) E_Beta(a+1,b)[f]``
    of the underlying integral over p is used instead, both terms having C = a + b.
    """
    s = alpha + T
    z = t / (s + t)
    log1m_z = np.log1p(-z)
    c = a + b + x - 1

    def euler(a_, b_):
        c_ = a_ + b_ + x - 1
        hyp = special.hyp2f1(a_ + b_ - 1 - r, a_ - 1, c_, z)
        return c_ / (a_ - 1) * (1.0 - np.exp((a_ - 1) * log1m_z) * hyp)

    if a + b >= 1.5:
        return euler(a, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = euler(a, b)
    small = c < 0.5
    if np.any(small):
        bx = b + x
        shifted = bx / (a + bx) * euler(a, b + 1) + a / (a + bx) * euler(a + 1, b)
        value = np.where(small, shifted, value)
    return value


def _alive_expected(r, alpha, a, b, t, x, T):
    """_alive_expected_raw with the removable singularity at a == 1 bridged."""
    delta = _A_SINGULAR_HALF_WIDTH
    if abs(a - 1.0) >= delta:
        return _alive_expected_raw(r, alpha, a, b, t, x, T)
    low = _alive_expected_raw(r, alpha, 1.0 - delta, b, t, x, T)
    high = _alive_expected_raw(r, alpha, 1.0 + delta, b, t, x, T)
    return low + (a - (1.0 - delta)) / (2 * delta) * (high - low)


def _check_t(t):
    t = _float_array("t", t)
    if np.any(t < 0):
        raise ValueError("t (horizon) must be >= 0")
    return t


def bgnbd_expected_purchases(params, t, x, t_x, T):
    """E[Y(t) | x, t_x, T]: expected purchases in (T, T + t] (eq. 10 of the paper).

    ``P(alive | x, t_x, T) * E[Y(t) | alive, x, T]``, the second factor in the Euler
    form described in ``_alive_expected_raw`` (numerically safe for x in the
    hundreds and T, t in the thousands of days). ``t`` broadcasts against the
    customer arrays; t == 0 gives exactly 0 and the value increases with t.
    """
    r, alpha, a, b = _bgnbd_params(params)
    x, t_x, T = _check_rft(x, t_x, T)
    t = _check_t(t)
    p_alive = special.expit(-_log_odds_dead(r, alpha, a, b, x, t_x, T))
    if t.ndim:
        return p_alive * _alive_expected(r, alpha, a, b, t, x, T)
    ux, uT, inverse = _distinct_pairs(x.ravel(), T.ravel())
    expected = _alive_expected(r, alpha, a, b, float(t), ux, uT)
    if inverse is not None:
        expected = expected[inverse]
    return p_alive * expected.reshape(x.shape)


def bgnbd_unconditional_expected(params, t):
    """E[X(t)] for a customer just acquired (eq. 7 of the paper).

    ``(a + b - 1) / (a - 1) * [1 - (alpha / (alpha + t))^r 2F1(r, b; a + b - 1;
    t / (alpha + t))]``, i.e. eq. 10 with x = t_x = T = 0 (same safe evaluation).
    """
    r, alpha, a, b = _bgnbd_params(params)
    t = _check_t(t)
    return _alive_expected(r, alpha, a, b, t, np.zeros_like(t), np.zeros_like(t))


def simulate_bgnbd(params, n, T_max, rng, T=None):
    """Draw ``n`` customers from the BG/NBD model; returns ``{x, t_x, T}`` arrays.

    Per customer lambda ~ Gamma(r, rate alpha), p ~ Beta(a, b). Repeat purchases
    follow a Poisson process of rate lambda; after each one the customer drops out
    with probability p, so the number of repeat purchases made before dropping out
    is G ~ Geometric(p) on {1, 2, ...}. With N ~ Poisson(lambda T) the events in
    (0, T], x = min(N, G), and given N the event times are N sorted uniforms on
    (0, T], so t_x = T * Beta(x, N - x + 1) (x-th order statistic). Birth times
    are heterogeneous: T ~ Uniform(0, T_max) unless ``T`` (array or scalar) is given.
    Fully vectorised.
    """
    r, alpha, a, b = _bgnbd_params(params)
    n = int(n)
    if T is None:
        T = rng.uniform(0.0, float(T_max), size=n)
    else:
        T = np.broadcast_to(_float_array("T", T), (n,)).astype(np.float64)
    lam = rng.gamma(r, 1.0 / alpha, size=n)
    p = np.maximum(rng.beta(a, b, size=n), 1e-300)
    events = rng.poisson(lam * T)
    dropout_after = rng.geometric(p)
    x = np.minimum(events, dropout_after)
    t_x = np.zeros(n)
    pos = x > 0
    t_x[pos] = T[pos] * rng.beta(x[pos], events[pos] - x[pos] + 1)
    return {"x": x.astype(np.float64), "t_x": t_x, "T": T}


# --------------------------------------------------------------------------------------
# Gamma-Gamma
# --------------------------------------------------------------------------------------


def _check_xm(x, m):
    x = _float_array("x", x)
    m = _float_array("m", m)
    x, m = np.broadcast_arrays(x, m)
    if np.any(x < 1) or np.any(x != np.floor(x)):
        raise ValueError(
            "the Gamma-Gamma model needs customers with x >= 1 repeat transactions "
            "(integers); filter out x == 0 first"
        )
    if np.any(m <= 0):
        raise ValueError("m (mean transaction value) must be > 0")
    return x, m


def gamma_gamma_log_likelihood(params, x, m, weights=None):
    """Per-customer Gamma-Gamma log-likelihood of the mean spend m over x transactions.

    Transactions z ~ Gamma(p, nu), nu ~ Gamma(q, v) (rates), so that the density of
    the mean m of x transactions is ([GG], as in ``lifetimes``)::

        ln G(px + q) - ln G(px) - ln G(q) + q ln v + (px - 1) ln m + px ln x
        - (px + q) ln(x m + v)

    With ``weights`` each value is multiplied by its weight.
    """
    p, q, v = _gg_params(params)
    x, m = _check_xm(x, m)
    px = p * x
    ll = (
        special.gammaln(px + q)
        - special.gammaln(px)
        - special.gammaln(q)
        + q * math.log(v)
        + (px - 1) * np.log(m)
        + px * np.log(x)
        - (px + q) * np.log(x * m + v)
    )
    if weights is not None:
        ll = ll * _check_weights(weights, ll.size).reshape(ll.shape)
    return ll


class _GammaGammaObjective:
    """Mean negative Gamma-Gamma log-likelihood and gradient on log-parameters."""

    def __init__(self, x, m, w):
        self.n = float(w.sum())
        self.ux, inverse = np.unique(x, return_inverse=True)
        self.wx = np.bincount(inverse.ravel(), weights=w, minlength=self.ux.size)
        self.x, self.w = x, w
        log_m = np.log(m)
        self.xm = x * m
        self.sum_w_log_m = float(_dot(w, log_m))
        self.sum_wx_log_m = float(_dot(w * x, log_m))

    def __call__(self, theta):
        p, q, v = np.exp(theta)
        ux, wx, x, w = self.ux, self.wx, self.x, self.w
        dg = special.digamma
        pux = p * ux
        ll = _dot(
            wx,
            special.gammaln(pux + q) - special.gammaln(pux) + pux * np.log(ux),
        ) + self.n * (q * math.log(v) - special.gammaln(q))
        ll += p * self.sum_wx_log_m - self.sum_w_log_m
        g_p = _dot(wx, ux * (dg(pux + q) - dg(pux) + np.log(ux))) + self.sum_wx_log_m
        g_q = _dot(wx, dg(pux + q)) + self.n * (math.log(v) - dg(q))
        g_v = self.n * q / v
        log_xmv = np.log(self.xm + v)
        pxq = p * x + q
        ll -= _dot(w, pxq * log_xmv)
        g_p -= _dot(w * x, log_xmv)
        g_q -= _dot(w, log_xmv)
        g_v -= _dot(w, pxq / (self.xm + v))
        grad = np.array([g_p * p, g_q * q, g_v * v])
        return -ll / self.n, -grad / self.n


def fit_gamma_gamma(x, m, weights=None, initial=None):
    """Maximum-likelihood Gamma-Gamma fit ([GG]; the ``lifetimes`` likelihood).

    ``x`` >= 1 is the number of repeat transactions whose values are averaged into
    ``m`` > 0. Same optimiser as fit_bgnbd (log-parameters, L-BFGS-B with analytic
    gradient, Newton steps first from an ``initial`` start, mean per customer, no
    penalizer). Default start p = 1, q = 2, v = weighted mean of m.

    Returns ``{p, q, v, log_likelihood, converged, iterations, n_customers,
    at_bound, mean_defined}``; ``mean_defined`` is ``q > 1``: when False the
    population mean spend p v / (q - 1) does not exist and
    gamma_gamma_expected_value() refuses the parameters.
    """
    x, m = (np.ravel(a) for a in _check_xm(x, m))
    w = _check_weights(weights, x.shape[0])
    keep = w > 0
    x, m, w = x[keep], m[keep], w[keep]
    n = float(w.sum()) if w.size else 0.0
    _check_enough(n, "Gamma-Gamma")
    warm = initial is not None
    if not warm:
        initial = (1.0, 2.0, float(_dot(w, m)) / n)
    theta0 = np.log(_gg_params(initial))
    objective = _GammaGammaObjective(x, m, w)
    bounds = [_LOG_BOUNDS, _LOG_BOUNDS, _LOG_BOUNDS_SCALE]
    theta, mean_nll, converged, iterations, at_bound = _minimize(
        objective, theta0, bounds, warm=warm
    )
    p, q, v = (float(val) for val in np.exp(theta))
    return {
        "p": p,
        "q": q,
        "v": v,
        "log_likelihood": -mean_nll * objective.n,
        "converged": converged,
        "iterations": iterations,
        "n_customers": n,
        "at_bound": at_bound,
        "mean_defined": q > 1,
    }


def gamma_gamma_expected_value(params, x, m):
    """E[M | p, q, v, m, x]: expected mean transaction value ([GG], the conditional
    expectation of the Gamma-Gamma model; ``lifetimes``' conditional_expected_average_profit).

    ``p (v + x m) / (p x + q - 1)``, a weighted average of the population mean
    ``p v / (q - 1)`` and the customer's observed mean m. For x == 0 (m is ignored
    and may be 0 or NaN) the population mean is returned. Requires q > 1, else the
    population mean is infinite: ValueError.
    """
    p, q, v = _gg_params(params)
    if q <= 1:
        raise ValueError(
            f"Gamma-Gamma q = {q:g} <= 1: the expected spend is undefined (infinite "
            "population mean); do not use this fit for monetary value"
        )
    x = _float_array("x", x)
    m = np.asarray(m, dtype=np.float64)
    x, m = np.broadcast_arrays(x, m)
    if np.any(x < 0):
        raise ValueError("x must be >= 0")
    pos = x > 0
    m = np.where(pos, m, 0.0)
    if not np.all(np.isfinite(m)) or np.any(m[pos] <= 0):
        raise ValueError("m (mean transaction value) must be finite and > 0 where x > 0")
    return p * (v + x * m) / (p * x + q - 1)


def simulate_gamma_gamma(params, x, rng):
    """Draw the mean spend m of x >= 1 transactions per customer (vectorised).

    nu ~ Gamma(q, rate v) per customer; the sum of x transactions Gamma(p, rate nu)
    is Gamma(p x, rate nu), so m = Gamma(p x, rate nu) / x.
    """
    p, q, v = _gg_params(params)
    x = _float_array("x", x)
    if np.any(x < 1):
        raise ValueError("simulate_gamma_gamma needs x >= 1")
    nu = rng.gamma(q, 1.0 / v, size=x.shape)
    return rng.gamma(p * x, 1.0 / nu) / x


# --------------------------------------------------------------------------------------
# CLV
# --------------------------------------------------------------------------------------


def customer_lifetime_value(
    bgnbd,
    gg,
    x,
    t_x,
    T,
    m,
    horizon_days=365,
    discount_rate_yearly=0.10,
    step_days=CLV_STEP_DAYS,
):
    """Discounted expected margin over the next ``horizon_days`` per customer.

    ``sum_k (E[Y(t_k)] - E[Y(t_{k-1})]) * E[value] / (1 + d)^(t_k / step_days)``
    for k = 1 .. ceil(horizon / step), with t_k = min(k * step, horizon) (the last
    step is shortened to end at the horizon), E[Y] from eq. 10 of [BG/NBD], E[value]
    from gamma_gamma_expected_value (x == 0: population mean) and d the per-step
    rate equivalent to the yearly one, ``(1 + yearly)^(step / 365) - 1`` (30-day
    steps: the monthly-equivalent rate). The discount factor of step k is thus
    ``(1 + yearly)^(-t_k / 365)``. P(alive) is computed once and the discounted
    sum of eq. 10 once per distinct (x, T) pair; the loop runs over the steps only.
    ``m`` is ignored (may be 0 or NaN) where x == 0.
    """
    return predict(bgnbd, gg, x, t_x, T, m, (), horizon_days, discount_rate_yearly, step_days)[3]


def _discounted_purchases(alive_expected, shape, horizon_days, discount_rate_yearly, step_days):
    """The discounted sum of ``customer_lifetime_value`` (without P(alive) and the
    value): ``sum_k (E(t_k) - E(t_{k-1})) (1 + yearly)^(-t_k / 365)`` with
    ``alive_expected(t)`` the alive factor of eq. 10 at ``t`` (arrays of ``shape``)."""
    horizon = float(horizon_days)
    step = float(step_days)
    yearly = float(discount_rate_yearly)
    if not (math.isfinite(horizon) and horizon >= 0):
        raise ValueError("horizon_days must be >= 0")
    if not (math.isfinite(step) and step > 0):
        raise ValueError("step_days must be > 0")
    if not (math.isfinite(yearly) and yearly > -1):
        raise ValueError("discount_rate_yearly must be > -1")
    discounted = np.zeros(shape)
    previous = np.zeros(shape)
    for k in range(1, math.ceil(horizon / step - 1e-9) + 1):
        t_k = min(k * step, horizon)
        current = alive_expected(t_k)
        discounted += (current - previous) * (1.0 + yearly) ** (-t_k / 365.0)
        previous = current
    return discounted


def predict(
    bgnbd,
    gg,
    x,
    t_x,
    T,
    m,
    horizons,
    horizon_days=365,
    discount_rate_yearly=0.10,
    step_days=CLV_STEP_DAYS,
):
    """Every prediction of a batch of customers at once: P(alive), the expected
    purchases over each of ``horizons`` (days), the expected order value and the
    customer lifetime value (see ``customer_lifetime_value``), with the same results
    as ``bgnbd_p_alive``, ``bgnbd_expected_purchases`` and
    ``gamma_gamma_expected_value`` one by one.

    Shared instead of computed again by each: P(alive), the distinct (x, T) pairs
    (eq. 10's alive factor depends on them only: a few 10^4 pairs for 10^6
    customers), and eq. 10 at the horizons that are also steps of the lifetime value
    (30, 90 and 365 days of a one-year horizon).

    Returns (p_alive, {horizon: expected purchases}, expected value, lifetime value).
    """
    r, alpha, a, b = _bgnbd_params(bgnbd)
    x, t_x, T = _check_rft(x, t_x, T)
    for t in horizons:
        _check_t(t)
    value = gamma_gamma_expected_value(gg, x, m)
    p_alive = special.expit(-_log_odds_dead(r, alpha, a, b, x, t_x, T))
    shape = p_alive.shape
    ux, uT, inverse = _distinct_pairs(x.ravel(), T.ravel())
    computed = {}

    def alive_expected(t):
        if t not in computed:
            computed[t] = _alive_expected(r, alpha, a, b, t, ux, uT)
        return computed[t]

    discounted = _discounted_purchases(
        alive_expected, ux.shape, horizon_days, discount_rate_yearly, step_days
    )

    def per_customer(values):
        return (values if inverse is None else values[inverse]).reshape(shape)

    expected = {t: p_alive * per_customer(alive_expected(float(t))) for t in horizons}
    return p_alive, expected, value, per_customer(discounted) * p_alive * value


def _distinct_pairs(x, T):
    """Distinct (x, T) pairs of two 1-D arrays and the row -> pair index.

    Returns (x, T, None) when fewer than half the rows would be saved.
    """
    n = x.size
    if n < 2:
        return x, T, None
    order = np.lexsort((T, x))
    xs, Ts = x[order], T[order]
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.not_equal(xs[1:], xs[:-1], out=new[1:])
    new[1:] |= Ts[1:] != Ts[:-1]
    n_distinct = int(new.sum())
    if n_distinct * 2 > n:
        return x, T, None
    inverse = np.empty(n, dtype=np.intp)
    inverse[order] = np.cumsum(new) - 1
    return xs[new], Ts[new], inverse
