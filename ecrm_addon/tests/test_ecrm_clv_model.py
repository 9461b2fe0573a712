"""Tests of the CLV models in ``ecrm_addon/tools/clv.py`` (BG/NBD + Gamma-Gamma).

Pure numerical tests: no database access, fixed seeds, a few seconds in total.

Tolerances of the parameter-recovery tests come from a Monte Carlo study of the
estimators (30 seeds, same designs as below): with 50,000 simulated customers the
relative standard deviations are about 0.7 % (r), 1.0 % (alpha), 2.5 % (a), 3.6 % (b)
for BG/NBD, and 2.2 % (p), 0.8 % (q), 3.0 % (v) for Gamma-Gamma. The tolerances
(10 % for r and alpha, 15 % for a, b, p, q and v) are thus at least 4 standard
deviations: robust to the seed while still catching a wrong likelihood, which
biases the estimates by far more.
"""

import itertools
import math
from unittest.mock import patch

import numpy as np
from scipy import integrate, special

from odoo.tests import BaseCase, tagged

from odoo.addons.ecrm_addon.tools import clv

BGNBD_TRUE = {"r": 0.75, "alpha": 60.0, "a": 0.8, "b": 2.5}  # alpha in days
GG_TRUE = {"p": 6.0, "q": 4.0, "v": 15.0}


def naive_bgnbd_log_likelihood(params, x, t_x, T):
    """Scalar, direct transcription of eq. 6 of Fader, Hardie & Lee (2005)."""
    r, alpha, a, b = params
    ln_a1 = math.lgamma(r + x) - math.lgamma(r) + r * math.log(alpha)
    ln_a2 = math.lgamma(a + b) + math.lgamma(b + x) - math.lgamma(b) - math.lgamma(a + b + x)
    a3 = (1.0 / (alpha + T)) ** (r + x)
    a4 = a / (b + x - 1) * (1.0 / (alpha + t_x)) ** (r + x) if x > 0 else 0.0
    return ln_a1 + ln_a2 + math.log(a3 + a4)


def naive_gamma_gamma_log_likelihood(params, x, m):
    """Scalar Gamma-Gamma log density of the mean m of x transactions."""
    p, q, v = params
    return (
        math.lgamma(p * x + q)
        - math.lgamma(p * x)
        - math.lgamma(q)
        + q * math.log(v)
        + (p * x - 1) * math.log(m)
        + p * x * math.log(x)
        - (p * x + q) * math.log(x * m + v)
    )


def quad_expected_purchases(params, t, x, t_x, T):
    """E[Y(t) | x, t_x, T] by numerical integration over the drop-out probability.

    Given alive at T: lambda ~ Gamma(r + x, alpha + T) and p ~ Beta(a, b + x), and
    E[Y(t) | lambda, p] = (1 - exp(-lambda p t)) / p, so integrating lambda out,
    E[Y(t) | alive] = E_p[(1 - ((alpha+T) / (alpha+T+p t))^(r+x)) / p]: no
    hypergeometric function involved.
    """
    r, alpha, a, b = params
    c = t / (alpha + T)

    def integrand(p):
        if p == 0.0:
            return (r + x) * c  # the limit at p -> 0
        return -math.expm1(-(r + x) * math.log1p(p * c)) / p

    value, _error = integrate.quad(
        integrand, 0.0, 1.0, weight="alg", wvar=(a - 1, b + x - 1), limit=200, epsabs=0
    )
    alive_expected = value / math.exp(special.betaln(a, b + x))
    p_alive = (
        1.0 if x == 0 else 1.0 / (1.0 + a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x))
    )
    return p_alive * alive_expected


@tagged("post_install", "-at_install", "ecrm")
class TestEcrmClvModel(BaseCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        rng = np.random.default_rng(20240518)
        cls.bgnbd_data = clv.simulate_bgnbd(BGNBD_TRUE, 50_000, 1100, rng)
        cls.bgnbd_fit = clv.fit_bgnbd(**cls.bgnbd_data)

    # ------------------------------------------------------------------ recovery
    def test_bgnbd_parameter_recovery(self):
        """Fit on 50,000 simulated customers (ages uniform on 0..1100 days):
        r and alpha within 10 %, a and b within 15 % (see the module docstring)."""
        fit = self.bgnbd_fit
        self.assertTrue(fit["converged"])
        self.assertFalse(fit["at_bound"])
        self.assertEqual(fit["n_customers"], 50_000)
        for name, tolerance in (("r", 0.10), ("alpha", 0.10), ("a", 0.15), ("b", 0.15)):
            relative_error = abs(fit[name] / BGNBD_TRUE[name] - 1)
            self.assertLess(relative_error, tolerance, f"{name}: {fit[name]:.4f}")
        # the reported log-likelihood is the sum of the per-customer values
        per_customer = clv.bgnbd_log_likelihood(fit, **self.bgnbd_data)
        np.testing.assert_allclose(fit["log_likelihood"], per_customer.sum(), rtol=1e-10)
        # and it beats the true parameters (it is the maximum)
        true_ll = clv.bgnbd_log_likelihood(BGNBD_TRUE, **self.bgnbd_data).sum()
        self.assertGreaterEqual(fit["log_likelihood"], true_ll)

    def test_gamma_gamma_parameter_recovery(self):
        """Fit on 50,000 simulated repeat buyers (x ~ Geometric(0.3)):
        p, q and v within 15 %."""
        rng = np.random.default_rng(20240519)
        x = rng.geometric(0.3, 50_000).astype(float)
        m = clv.simulate_gamma_gamma(GG_TRUE, x, rng)
        fit = clv.fit_gamma_gamma(x, m)
        self.assertTrue(fit["converged"])
        self.assertTrue(fit["mean_defined"])
        for name in ("p", "q", "v"):
            relative_error = abs(fit[name] / GG_TRUE[name] - 1)
            self.assertLess(relative_error, 0.15, f"{name}: {fit[name]:.4f}")
        per_customer = clv.gamma_gamma_log_likelihood(fit, x, m)
        np.testing.assert_allclose(fit["log_likelihood"], per_customer.sum(), rtol=1e-10)

    def test_warm_start(self):
        """A start at the optimum (a refit on unchanged data) returns it without
        iterating; a start near it converges to the same optimum."""
        fit = self.bgnbd_fit
        names = ("r", "alpha", "a", "b")
        again = clv.fit_bgnbd(**self.bgnbd_data, initial=[fit[name] for name in names])
        self.assertTrue(again["converged"])
        self.assertEqual(again["iterations"], 0)
        np.testing.assert_allclose(
            [again[name] for name in names], [fit[name] for name in names], rtol=1e-12
        )
        near = clv.fit_bgnbd(**self.bgnbd_data, initial=[fit[name] * 1.2 for name in names])
        self.assertTrue(near["converged"])
        self.assertGreater(near["iterations"], 0)
        for name in names:
            self.assertAlmostEqual(near[name] / fit[name], 1, places=4, msg=name)
        self.assertAlmostEqual(near["log_likelihood"], fit["log_likelihood"], places=3)

    def test_warm_start_newton(self):
        """The nightly refit: on the same customers a day older, from the last fit,
        Newton steps reach the optimum without L-BFGS-B, at the cold fit's estimates;
        from a start too far away they give way to L-BFGS-B."""
        names = ("r", "alpha", "a", "b")
        fit = self.bgnbd_fit
        later = {**self.bgnbd_data, "T": self.bgnbd_data["T"] + 1.0}
        cold = clv.fit_bgnbd(**later)
        self.assertTrue(cold["converged"])
        with patch.object(clv.optimize, "minimize", side_effect=AssertionError("L-BFGS-B")):
            warm = clv.fit_bgnbd(**later, initial=[fit[name] for name in names])
        self.assertTrue(warm["converged"])
        self.assertIn(warm["iterations"], (1, 2))
        np.testing.assert_allclose(
            [warm[name] for name in names], [cold[name] for name in names], rtol=1e-4
        )
        self.assertGreaterEqual(warm["log_likelihood"], cold["log_likelihood"] - 1e-6)
        far = [fit["r"] * 3, fit["alpha"] / 3, fit["a"], fit["b"] * 3]
        with patch.object(clv.optimize, "minimize", wraps=clv.optimize.minimize) as minimize:
            from_far = clv.fit_bgnbd(**later, initial=far)
        self.assertTrue(minimize.called)
        self.assertTrue(from_far["converged"])
        np.testing.assert_allclose(
            [from_far[name] for name in names], [cold[name] for name in names], rtol=1e-4
        )
        # Gamma-Gamma alike.
        x = np.maximum(self.bgnbd_data["x"], 1)
        m = clv.simulate_gamma_gamma(GG_TRUE, x, np.random.default_rng(3))
        gg = clv.fit_gamma_gamma(x, m)
        more = np.concatenate([m[:-100], m[-100:] * 1.5])
        gg_cold = clv.fit_gamma_gamma(x, more)
        with patch.object(clv.optimize, "minimize", side_effect=AssertionError("L-BFGS-B")):
            gg_warm = clv.fit_gamma_gamma(x, more, initial=[gg["p"], gg["q"], gg["v"]])
        self.assertTrue(gg_warm["converged"])
        np.testing.assert_allclose(
            [gg_warm[name] for name in "pqv"], [gg_cold[name] for name in "pqv"], rtol=1e-4
        )

    # ---------------------------------------------------------------- likelihood
    def test_log_likelihood_matches_naive_implementation(self):
        rng = np.random.default_rng(7)
        n = 50
        x = rng.integers(0, 30, n).astype(float)
        T = rng.uniform(1, 1100, n)
        t_x = np.where(x > 0, T * rng.uniform(0, 1, n), 0.0)
        for params in ((0.75, 60.0, 0.8, 2.5), (0.243, 30.9, 0.793, 2.426), (3.0, 5.0, 2.0, 0.4)):
            vector = clv.bgnbd_log_likelihood(params, x, t_x, T)
            naive = [
                naive_bgnbd_log_likelihood(params, *row) for row in zip(x, t_x, T, strict=True)
            ]
            np.testing.assert_allclose(vector, naive, rtol=1e-10)
            weights = rng.integers(1, 5, n)
            np.testing.assert_allclose(
                clv.bgnbd_log_likelihood(params, x, t_x, T, weights=weights),
                weights * np.asarray(naive),
                rtol=1e-10,
            )
        xg = rng.integers(1, 20, n).astype(float)
        m = rng.uniform(1, 200, n)
        np.testing.assert_allclose(
            clv.gamma_gamma_log_likelihood((6.0, 4.0, 15.0), xg, m),
            [
                naive_gamma_gamma_log_likelihood((6.0, 4.0, 15.0), *row)
                for row in zip(xg, m, strict=True)
            ],
            rtol=1e-10,
        )

    def test_weights_compressed_equals_expanded(self):
        """Fitting on unique rows + counts (SQL GROUP BY) equals fitting every row."""
        rng = np.random.default_rng(11)
        data = clv.simulate_bgnbd(BGNBD_TRUE, 8000, 700, rng)
        rows = np.column_stack([data["x"], np.floor(data["t_x"]), np.floor(data["T"])])
        unique_rows, counts = np.unique(rows, axis=0, return_counts=True)
        self.assertLess(len(unique_rows), 0.8 * len(rows))
        expanded = clv.fit_bgnbd(rows[:, 0], rows[:, 1], rows[:, 2])
        compressed = clv.fit_bgnbd(*unique_rows.T, weights=counts)
        for name in ("r", "alpha", "a", "b"):
            np.testing.assert_allclose(compressed[name], expanded[name], rtol=1e-5)
        np.testing.assert_allclose(
            compressed["log_likelihood"], expanded["log_likelihood"], rtol=1e-9
        )
        self.assertEqual(compressed["n_customers"], 8000)
        # same for Gamma-Gamma, with rounded spends
        x = rng.integers(1, 4, 6000).astype(float)
        m = np.round(clv.simulate_gamma_gamma(GG_TRUE, x, rng))
        m = np.maximum(m, 1.0)
        pairs, pair_counts = np.unique(np.column_stack([x, m]), axis=0, return_counts=True)
        gg_expanded = clv.fit_gamma_gamma(x, m)
        gg_compressed = clv.fit_gamma_gamma(pairs[:, 0], pairs[:, 1], weights=pair_counts)
        for name in ("p", "q", "v"):
            np.testing.assert_allclose(gg_compressed[name], gg_expanded[name], rtol=1e-5)

    # --------------------------------------------------------------- predictions
    def test_p_alive(self):
        params = (0.5, 10.0, 2.0, 3.0)
        # no repeat purchase: alive by construction, whatever T
        np.testing.assert_array_equal(clv.bgnbd_p_alive(params, 0, 0, [0.0, 10.0, 1e4]), 1.0)
        # hand-computed: a / (b + x - 1) = 2 / 4, (alpha + T) / (alpha + t_x) = 20 / 15
        self.assertAlmostEqual(
            float(clv.bgnbd_p_alive(params, 2, 5, 10)), 1 / (1 + 0.5 * (4 / 3) ** 2.5), places=14
        )
        # purchase on the last day: 1 / (1 + a / (b + x - 1))
        self.assertAlmostEqual(float(clv.bgnbd_p_alive(params, 2, 10, 10)), 1 / 1.5, places=14)
        # huge odds (x = 200, silent for 1100 days) give 0, not NaN
        extreme = clv.bgnbd_p_alive(BGNBD_TRUE, [200, 200], [1, 1100], [1100, 1100])
        self.assertTrue(np.all(np.isfinite(extreme)))
        self.assertLess(extreme[0], 1e-200)
        self.assertGreater(extreme[1], 0.9)
        self.assertEqual(float(clv.bgnbd_p_alive(BGNBD_TRUE, 1000, 1, 1100)), 0.0)

    def test_expected_purchases_hand_case(self):
        """With r = a + b - 1 the 2F1 of eq. 10 is elementary:
        2F1(r+x, b+x; r+x; z) = (1-z)^-(b+x), so the numerator is
        (r + x) / (a - 1) * (1 - ((alpha + T) / (alpha + T + t))^(r - b))."""
        params = (1.5, 10.0, 2.0, 0.5)  # r = a + b - 1
        # x = 2, t_x = 5, T = 10, t = 20: (alpha+T)/(alpha+T+t) = 1/2, numerator
        # = 3.5 * (1 - 1/2) = 1.75; denominator 1 + 2/1.5 * (20/15)^3.5 = 1 + (4/3)^4.5
        expected = 1.75 / (1 + (4 / 3) ** 4.5)
        self.assertAlmostEqual(
            float(clv.bgnbd_expected_purchases(params, 20, 2, 5, 10)), expected, places=12
        )
        # eq. 7 for a new customer, t = 10: 1.5 / 1 * (1 - (10 / 20)^1) = 0.75
        self.assertAlmostEqual(float(clv.bgnbd_unconditional_expected(params, 10)), 0.75, places=12)
        # eq. 10 as printed in the paper (no transformation) on moderate values
        r, alpha, a, b = BGNBD_TRUE.values()
        x, t_x, T, t = 4.0, 200.0, 400.0, 90.0
        z = t / (alpha + T + t)
        numerator = (
            (a + b + x - 1)
            / (a - 1)
            * (
                1
                - ((alpha + T) / (alpha + T + t)) ** (r + x)
                * special.hyp2f1(r + x, b + x, a + b + x - 1, z)
            )
        )
        denominator = 1 + a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x)
        self.assertAlmostEqual(
            float(clv.bgnbd_expected_purchases(BGNBD_TRUE, t, x, t_x, T)),
            numerator / denominator,
            places=11,
        )

    def test_expected_purchases_zero_horizon_and_monotone(self):
        x = np.array([0, 1, 3, 10, 50, 200], dtype=float)
        T = np.array([0, 30, 300, 700, 1000, 1100], dtype=float)
        t_x = np.where(x > 0, 0.8 * T, 0.0)
        np.testing.assert_array_equal(clv.bgnbd_expected_purchases(BGNBD_TRUE, 0, x, t_x, T), 0.0)
        horizons = np.array([1, 7, 30, 90, 180, 365, 730, 1100], dtype=float)
        table = clv.bgnbd_expected_purchases(BGNBD_TRUE, horizons[:, None], x, t_x, T)
        self.assertEqual(table.shape, (8, 6))
        self.assertTrue(np.all(np.diff(table, axis=0) > 0))
        # scalar horizon (distinct (x, T) path) equals the broadcast path
        np.testing.assert_allclose(
            clv.bgnbd_expected_purchases(BGNBD_TRUE, 90, x, t_x, T), table[3], rtol=1e-14
        )
        # a new customer (x = t_x = T = 0) is eq. 7
        np.testing.assert_allclose(
            clv.bgnbd_expected_purchases(BGNBD_TRUE, horizons, 0, 0, 0),
            clv.bgnbd_unconditional_expected(BGNBD_TRUE, horizons),
            rtol=1e-14,
        )

    def test_expected_purchases_large_x_and_T(self):
        """x up to 200 and T up to 1100 days: finite, >= 0, equal to the integral
        of the model (quadrature, no 2F1) and to a Monte Carlo simulation."""
        customers = [
            (200, 1090, 1100),
            (150, 600, 1100),
            (80, 1000, 1000),
            (30, 900, 1000),
            (0, 0, 1100),
        ]
        x, t_x, T = (np.array(column, dtype=float) for column in zip(*customers, strict=True))
        for t in (30.0, 365.0, 1100.0):
            values = clv.bgnbd_expected_purchases(BGNBD_TRUE, t, x, t_x, T)
            self.assertTrue(np.all(np.isfinite(values)) and np.all(values >= 0))
            reference = [
                quad_expected_purchases(tuple(BGNBD_TRUE.values()), t, *row) for row in customers
            ]
            np.testing.assert_allclose(values, reference, rtol=1e-7)
        # Monte Carlo: alive at T, the customer's future is that of a new customer
        # of a BG/NBD population with the posterior parameters
        # (r + x, alpha + T, a, b + x); simulate it and compare the mean count.
        r, alpha, a, b = BGNBD_TRUE.values()
        rng = np.random.default_rng(3)
        t = 365.0
        p_alive = clv.bgnbd_p_alive(BGNBD_TRUE, x, t_x, T)
        values = clv.bgnbd_expected_purchases(BGNBD_TRUE, t, x, t_x, T)
        for i in (0, 2, 3, 4):
            posterior = (r + x[i], alpha + T[i], a, b + x[i])
            future = clv.simulate_bgnbd(posterior, 200_000, None, rng, T=t)["x"]
            monte_carlo = p_alive[i] * future.mean()
            standard_error = p_alive[i] * future.std() / math.sqrt(future.size)
            self.assertLess(
                abs(values[i] - monte_carlo), 5 * standard_error + 1e-9, f"customer {i}"
            )

    def test_unconditional_expected_matches_simulation(self):
        rng = np.random.default_rng(5)
        for t in (30.0, 365.0):
            counts = clv.simulate_bgnbd(BGNBD_TRUE, 200_000, None, rng, T=t)["x"]
            expected = float(clv.bgnbd_unconditional_expected(BGNBD_TRUE, t))
            standard_error = counts.std() / math.sqrt(counts.size)
            self.assertLess(abs(counts.mean() - expected), 5 * standard_error)

    def test_special_parameter_values(self):
        """a = 1 (removable singularity of eq. 10) and a + b = 1 with x = 0 (pole of
        2F1 at c = 0) give the limits of their neighbours."""
        args = (365.0, np.array([0.0, 5.0]), np.array([0.0, 300.0]), np.array([500.0, 500.0]))
        at_one = clv.bgnbd_expected_purchases((0.75, 60.0, 1.0, 2.5), *args)
        below = clv.bgnbd_expected_purchases((0.75, 60.0, 1.0 - 1e-3, 2.5), *args)
        above = clv.bgnbd_expected_purchases((0.75, 60.0, 1.0 + 1e-3, 2.5), *args)
        np.testing.assert_allclose(at_one, (below + above) / 2, rtol=1e-6)
        pole = clv.bgnbd_unconditional_expected((0.3, 10.0, 0.4, 0.6), [10.0, 100.0])
        near = clv.bgnbd_unconditional_expected((0.3, 10.0, 0.4, 0.6 + 1e-7), [10.0, 100.0])
        np.testing.assert_allclose(pole, near, rtol=1e-6)
        self.assertTrue(np.all(pole > 0))

    # ---------------------------------------------------------------- spend, CLV
    def test_gamma_gamma_expected_value(self):
        # p (v + x m) / (p x + q - 1) = 6 (15 + 60) / (18 + 3) = 450 / 21
        value = clv.gamma_gamma_expected_value(GG_TRUE, [3, 1, 0, 0], [20.0, 50.0, 0.0, np.nan])
        np.testing.assert_allclose(value, [450 / 21, 6 * 65 / 9, 30.0, 30.0], rtol=1e-14)
        with self.assertRaisesRegex(ValueError, "q = 0.9 <= 1"):
            clv.gamma_gamma_expected_value((6.0, 0.9, 15.0), 3, 20.0)

    def test_customer_lifetime_value(self):
        x, t_x, T, m = 3.0, 200.0, 300.0, 25.0
        gg_value = 6 * (15 + 3 * 25) / (6 * 3 + 4 - 1)
        # by hand: 13 steps of 30 days, the last one ending at day 365
        total, previous = 0.0, 0.0
        for k in range(1, 14):
            t_k = min(30.0 * k, 365.0)
            current = float(clv.bgnbd_expected_purchases(BGNBD_TRUE, t_k, x, t_x, T))
            total += (current - previous) * gg_value / 1.10 ** (t_k / 365)
            previous = current
        value = clv.customer_lifetime_value(BGNBD_TRUE, GG_TRUE, x, t_x, T, m)
        self.assertAlmostEqual(float(value), total, places=10)
        # no discount: expected purchases in the horizon times the expected spend
        undiscounted = clv.customer_lifetime_value(
            BGNBD_TRUE, GG_TRUE, x, t_x, T, m, discount_rate_yearly=0.0
        )
        expected = clv.bgnbd_expected_purchases(BGNBD_TRUE, 365, x, t_x, T) * gg_value
        self.assertAlmostEqual(float(undiscounted), float(expected), places=10)
        # vectorised, monotone in the horizon and the discount rate
        rng = np.random.default_rng(9)
        data = clv.simulate_bgnbd(BGNBD_TRUE, 2000, 1100, rng)
        spend = np.zeros(2000)
        buyers = data["x"] > 0
        spend[buyers] = clv.simulate_gamma_gamma(GG_TRUE, data["x"][buyers], rng)
        args = (data["x"], data["t_x"], data["T"], spend)
        values = [
            clv.customer_lifetime_value(BGNBD_TRUE, GG_TRUE, *args, horizon_days=h)
            for h in (0, 90, 365, 730)
        ]
        np.testing.assert_array_equal(values[0], 0.0)
        for shorter, longer in itertools.pairwise(values):
            self.assertTrue(np.all(longer >= shorter))
            self.assertGreater(longer.sum(), shorter.sum())
        cheap_money = clv.customer_lifetime_value(
            BGNBD_TRUE, GG_TRUE, *args, discount_rate_yearly=0.02
        )
        dear_money = clv.customer_lifetime_value(
            BGNBD_TRUE, GG_TRUE, *args, discount_rate_yearly=0.30
        )
        self.assertTrue(np.all(cheap_money >= values[2]) and np.all(dear_money <= values[2]))
        self.assertGreater(cheap_money.sum(), values[2].sum())
        self.assertLess(dear_money.sum(), values[2].sum())

    def test_predict_equals_each_prediction(self):
        """The batch prediction of the scoring equals the predictions one by one, to
        the last bit, for a (a < 1), near the singularity at a == 1 and a + b < 3/2;
        with a horizon that is no multiple of the step and one that is no step. The
        lifetime value (which customer_lifetime_value takes from predict) equals the
        discounted sum of the expected purchases one step after the other."""
        rng = np.random.default_rng(17)
        data = clv.simulate_bgnbd(BGNBD_TRUE, 3000, 1100, rng)
        spend = np.full(3000, 0.01)
        buyers = data["x"] > 0
        spend[buyers] = clv.simulate_gamma_gamma(GG_TRUE, data["x"][buyers], rng)
        args = (data["x"], data["t_x"], data["T"])
        for a, b, horizon in ((0.8, 2.5, 365), (1.00003, 2.5, 200), (0.3, 0.9, 365)):
            bgnbd = {**BGNBD_TRUE, "a": a, "b": b}
            p_alive, expected, value, lifetime = clv.predict(
                bgnbd, GG_TRUE, *args, spend, (30, 90, 365, 45), horizon, 0.08
            )
            np.testing.assert_array_equal(p_alive, clv.bgnbd_p_alive(bgnbd, *args))
            for days in (30, 90, 365, 45):
                np.testing.assert_array_equal(
                    expected[days], clv.bgnbd_expected_purchases(bgnbd, days, *args)
                )
            np.testing.assert_array_equal(
                value, clv.gamma_gamma_expected_value(GG_TRUE, data["x"], spend)
            )
            by_step, previous = 0.0, 0.0
            for k in range(1, -(-horizon // 30) + 1):
                t_k = min(30 * k, horizon)
                current = clv.bgnbd_expected_purchases(bgnbd, t_k, *args)
                by_step = by_step + (current - previous) * value / 1.08 ** (t_k / 365)
                previous = current
            np.testing.assert_allclose(lifetime, by_step, rtol=1e-12, atol=1e-12)

    # -------------------------------------------------------------------- errors
    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "empty input"):
            clv.fit_bgnbd([], [], [])
        with self.assertRaisesRegex(ValueError, "no customer has a repeat purchase"):
            clv.fit_bgnbd(np.zeros(50), np.zeros(50), np.full(50, 100.0))
        with self.assertRaisesRegex(ValueError, "at least 10"):
            clv.fit_bgnbd([1, 2, 0], [5, 8, 0], [10, 10, 10])
        with self.assertRaisesRegex(ValueError, "at least 10"):  # weights count customers
            clv.fit_bgnbd([1, 2, 0], [5, 8, 0], [10, 10, 10], weights=[0, 3, 2])
        with self.assertRaisesRegex(ValueError, "must not exceed T"):
            clv.fit_bgnbd(np.ones(20), np.full(20, 11.0), np.full(20, 10.0))
        with self.assertRaisesRegex(ValueError, "non-negative integers"):
            clv.bgnbd_p_alive(BGNBD_TRUE, 1.5, 1, 2)
        with self.assertRaisesRegex(ValueError, "empty input"):
            clv.fit_gamma_gamma([], [])
        with self.assertRaisesRegex(ValueError, "x >= 1"):
            clv.fit_gamma_gamma(np.zeros(20), np.ones(20))
        with self.assertRaisesRegex(ValueError, "must be > 0"):
            clv.fit_gamma_gamma(np.ones(20), np.zeros(20))
        with self.assertRaisesRegex(ValueError, "finite positive"):
            clv.bgnbd_p_alive((0.5, -1.0, 1.0, 1.0), 1, 1, 2)
