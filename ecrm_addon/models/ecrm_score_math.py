"""Vectorised scoring of a batch of customers (no Odoo, no loop over customers)."""

import numpy as np

# Engagement: this many interactions in 90 days count as fully engaged.
ENGAGED_INTERACTIONS = 6


def quintile_bounds(values):
    """Bounds of the quintile scores of ``values``, as ``quintile_scores`` takes them.

    A value's score is ceil(5 * cume_dist), the share of the values lower or equal to it
    (PostgreSQL's ``cume_dist``), so equal values always share a score; bound j is the
    highest value scoring j or less, None when no value scores that low.
    """
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    if not len(ordered):
        return [None] * 4
    cume_dist = np.searchsorted(ordered, ordered, side="right") / len(ordered)
    scores = np.ceil(5 * cume_dist)
    last = np.searchsorted(scores, np.arange(1, 5), side="right") - 1
    return [float(ordered[index]) if index >= 0 else None for index in last]


def quintile_scores(values, bounds):
    """Score 1..5 of each value: 1 + the number of bounds below it.

    ``bounds`` holds the highest value of scores 1..4 (None when no value has that
    score, which then counts as passed), so equal values always share a score.
    """
    scores = np.ones(len(values), dtype=np.int64)
    for bound in bounds:
        scores += values > (-np.inf if bound is None else bound)
    return np.minimum(scores, 5)


def score_batch(
    rows,
    bounds,
    segment_map,
    weights,
    tiers,
    model=None,
    horizon_days=365,
    discount_rate=0.10,
    backtest_days=0,
):
    """Scores and predictions of the stage rows of one batch.

    rows: an array (or rows) of (partner_id, frequency, x, t_x, age, order_total, refund,
    interactions_90d, inbound_share, response_rate, recency_days). Returns the columns r,
    f, m, segment, loyalty, tier, p_alive, e30, e90, e365, e_backtest, exp_value, clv as
    numpy arrays; a prediction that cannot be made (no fitted model, not finite) is NaN.
    """
    data = np.array(rows, dtype=np.float64).reshape(len(rows), 11)
    frequency, x, t_x, age = data[:, 1], data[:, 2], data[:, 3], data[:, 4]
    monetary = data[:, 5] + data[:, 6]
    recent, inbound, response, recency = data[:, 7], data[:, 8], data[:, 9], data[:, 10]

    r = quintile_scores(-recency, bounds["r"])
    f = quintile_scores(frequency, bounds["f"])
    m = quintile_scores(monetary, bounds["m"])
    segment = np.asarray(segment_map, dtype=np.int64)[r - 1, f - 1, m - 1]

    engagement = (
        0.5 * np.minimum(recent / ENGAGED_INTERACTIONS, 1.0) + 0.25 * inbound + 0.25 * response
    )
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum() if w.sum() > 0 else np.full(4, 0.25)
    loyalty = 100.0 * (
        w[0] * (r - 1) / 4 + w[1] * (f - 1) / 4 + w[2] * (m - 1) / 4 + w[3] * engagement
    )
    loyalty = np.round(loyalty, 2)
    tier_ids, tier_mins = tiers
    if tier_ids:
        index = np.searchsorted(np.asarray(tier_mins, dtype=np.float64), loyalty, side="right")
        tier = np.where(index > 0, np.asarray([0, *tier_ids])[index], 0)
    else:
        tier = np.zeros(len(rows), dtype=np.int64)

    count = len(rows)
    predictions = [np.full(count, np.nan)] * 7
    if model:
        predictions = _predict(
            model, x, t_x, age, data[:, 5] / np.maximum(frequency, 1), horizon_days,
            discount_rate, backtest_days,
        )  # fmt: skip
    return [r, f, m, segment, loyalty, tier, *predictions]


def _predict(model, x, t_x, age, spend, horizon_days, discount_rate, backtest_days):
    from ..tools import clv  # noqa: PLC0415 - scipy is only needed here

    bgnbd, gg = model["bgnbd"], model["gg"]
    p_alive = clv.bgnbd_p_alive(bgnbd, x, t_x, age)
    expected = [clv.bgnbd_expected_purchases(bgnbd, days, x, t_x, age) for days in (30, 90, 365)]
    backtest = (
        clv.bgnbd_expected_purchases(bgnbd, backtest_days, x, t_x, age)
        if backtest_days
        else np.full(len(x), np.nan)
    )
    value = clv.gamma_gamma_expected_value(gg, x, np.maximum(spend, 0.01))
    lifetime = clv.customer_lifetime_value(
        bgnbd, gg, x, t_x, age, np.maximum(spend, 0.01),
        horizon_days=horizon_days, discount_rate_yearly=discount_rate,
    )  # fmt: skip
    return [
        _clean(p_alive),
        *(_clean(values) for values in expected),
        _clean(backtest),
        _clean(value),
        _clean(lifetime),
    ]


def _clean(values):
    """Floats with inf as NaN (stored as NULL)."""
    values = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(values), values, np.nan)
