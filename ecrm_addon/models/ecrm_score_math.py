"""Vectorised scoring of a batch of customers (no Odoo, no loop over customers)."""

import functools
from datetime import datetime, timedelta

import numpy as np
import pytz

# Engagement: this many interactions in 90 days count as fully engaged.
ENGAGED_INTERACTIONS = 6
US_PER_DAY = 86_400_000_000
POSTGRES_EPOCH = datetime(2000, 1, 1)
MICROSECOND = timedelta(microseconds=1)


def local_days(timestamps, tz_name):
    """The local days (since 2000-01-01) in time zone ``tz_name`` of naive UTC
    timestamps given as int64 microseconds since 2000-01-01 (PostgreSQL's binary
    timestamps): ``(ts AT TIME ZONE 'UTC' AT TIME ZONE tz)::date`` for a whole array.

    Each timestamp gets the offset in force at its instant, looked up among the zone's
    changes of offset (see ``_zone_changes``) by one binary search over the array.
    """
    timestamps = np.asarray(timestamps, dtype=np.int64)
    changes, offsets = _zone_changes(tz_name)
    index = np.searchsorted(changes, timestamps, side="right")
    return (timestamps + offsets[index]) // US_PER_DAY


@functools.lru_cache(maxsize=32)
def _zone_changes(tz_name):
    """The instants (int64 microseconds since 2000-01-01, UTC) at which the zone's UTC
    offset changes, and the offsets (microseconds) in force before the first change and
    from each change on: one more offset than changes.

    These are pytz's own transition tables (``_utc_transition_times`` and
    ``_transition_info``, which ``tz.fromutc`` searches the same way: the last change
    at or before the instant); a zone without them has one fixed offset.
    """
    tz = pytz.timezone(tz_name)
    times = getattr(tz, "_utc_transition_times", None)
    infos = getattr(tz, "_transition_info", None)
    if not times or not infos or len(times) != len(infos):
        fixed = tz.utcoffset(POSTGRES_EPOCH) // MICROSECOND
        return np.zeros(0, dtype=np.int64), np.array([fixed], dtype=np.int64)
    changes = [(time - POSTGRES_EPOCH) // MICROSECOND for time in times[1:]]
    offsets = [info[0] // MICROSECOND for info in infos]
    return np.array(changes, dtype=np.int64), np.array(offsets, dtype=np.int64)


def distinct_rows(x, t_x, age):
    """The distinct (x, t_x, age) rows of non-negative integer arrays, as a float array
    of shape (rows, 3) in lexicographic order, and how many times each occurs.

    One sort of int64 keys (x in the high bits, then t_x, then age) when the values fit
    in them, which is 10 times faster than numpy's unique of rows.
    """
    x, t_x, age = (np.asarray(values, dtype=np.int64) for values in (x, t_x, age))
    if not len(x) or (x.max() < 1 << 23 and max(t_x.max(), age.max()) < 1 << 20):
        keys, counts = np.unique((x << 40) | (t_x << 20) | age, return_counts=True)
        rows = np.column_stack([keys >> 40, (keys >> 20) & 0xFFFFF, keys & 0xFFFFF])
    else:
        rows, counts = np.unique(np.column_stack([x, t_x, age]), axis=0, return_counts=True)
    return rows.astype(np.float64).reshape(-1, 3), counts


def quintile_bounds(values):
    """Bounds of the quintile scores of ``values``, as ``quintile_scores`` takes them.

    A value's score is ceil(5 * cume_dist), the share of the values lower or equal to it
    (PostgreSQL's ``cume_dist``), so equal values always share a score; bound j is the
    highest value scoring j or less, None when no value scores that low.
    """
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    if not len(ordered):
        return [None] * 4
    # Scores only change between distinct values: computed at the last of each run of
    # equal values (cume_dist is its position + 1 over the count), in one pass.
    ends = np.flatnonzero(np.r_[ordered[1:] != ordered[:-1], True])
    scores = np.ceil(5 * ((ends + 1) / len(ordered)))
    last = np.searchsorted(scores, np.arange(1, 5), side="right") - 1
    return [float(ordered[ends[index]]) if index >= 0 else None for index in last]


def quintile_scores(values, bounds):
    """Score 1..5 of each value: 1 + the number of bounds below it.

    ``bounds`` holds the highest value of scores 1..4 (None when no value has that
    score, which then counts as passed), so equal values always share a score.
    """
    scores = np.ones(len(values), dtype=np.int64)
    for bound in bounds:
        scores += values > (-np.inf if bound is None else bound)
    return np.minimum(scores, 5)


def repeat_spend(customers):
    """The Gamma-Gamma data of customers: x, their number of repeat orders, and the
    mean value of those orders (NaN where x is 0), their first order left out
    (``order_total - first_value``).

    Fader, Hardie and Lee (2005) and the reference implementations (lifetimes,
    CLVTools, PyMC-Marketing) fit the model on the repeat purchases only: the first
    one is often of another kind (a welcome offer, a starter kit). Credit notes are
    not spread over the orders: they are left out, as from the mean of all orders.
    A repeat total below a millionth of the order total is taken as 0 (free repeat
    orders, where subtracting the first order's value from the sum leaves a rounding
    error).
    """
    x = np.asarray(customers["x"], dtype=np.float64)
    total = np.asarray(customers["order_total"], dtype=np.float64)
    repeat = total - np.asarray(customers["first_value"], dtype=np.float64)
    repeat = np.where(np.abs(repeat) <= 1e-6 * np.abs(total), 0.0, repeat)
    with np.errstate(invalid="ignore", divide="ignore"):
        return x, np.where(x > 0, repeat / np.maximum(x, 1), np.nan)


def score_batch(
    customers,
    bounds,
    segment_map,
    weights,
    tiers,
    model=None,
    horizon_days=365,
    discount_rate=0.10,
    backtest_days=0,
):
    """Scores and predictions of a batch of customers.

    customers: a dict of equal-length arrays: frequency, x, t_x, age, recency_days
    (days), order_total, first_value (the first order's), refund, interactions_90d,
    inbound_share, response_rate. The expected order value is the Gamma-Gamma one of
    the mean value of the repeat orders (see ``repeat_spend``).
    Returns the columns r, f, m (1..5), segment, loyalty, tier (0: none), p_alive, e30,
    e90, e365, e_backtest, exp_value, clv as numpy arrays; a prediction that cannot be
    made (no fitted model, not finite) is NaN.
    """
    frequency = np.asarray(customers["frequency"], dtype=np.float64)
    x = np.asarray(customers["x"], dtype=np.float64)
    t_x = np.asarray(customers["t_x"], dtype=np.float64)
    age = np.asarray(customers["age"], dtype=np.float64)
    order_total = np.asarray(customers["order_total"], dtype=np.float64)
    monetary = order_total + customers["refund"]
    recent = np.asarray(customers["interactions_90d"], dtype=np.float64)
    inbound, response = customers["inbound_share"], customers["response_rate"]
    recency = np.asarray(customers["recency_days"], dtype=np.float64)
    count = len(frequency)

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
        tier = np.zeros(count, dtype=np.int64)

    predictions = [np.full(count, np.nan)] * 7
    if model:
        _x, spend = repeat_spend(customers)
        predictions = _predict(
            model, x, t_x, age, np.where(x > 0, spend, 0.0), horizon_days, discount_rate,
            backtest_days,
        )  # fmt: skip
    return [r, f, m, segment, loyalty, tier, *predictions]


def _predict(model, x, t_x, age, spend, horizon_days, discount_rate, backtest_days):
    from ..tools import clv  # noqa: PLC0415 - scipy is only needed here

    horizons = (30, 90, 365, *((backtest_days,) if backtest_days else ()))
    p_alive, expected, value, lifetime = clv.predict(
        model["bgnbd"], model["gg"], x, t_x, age, np.maximum(spend, 0.01), horizons,
        horizon_days=horizon_days, discount_rate_yearly=discount_rate,
    )  # fmt: skip
    backtest = expected[backtest_days] if backtest_days else np.full(len(x), np.nan)
    return [
        _clean(p_alive),
        *(_clean(expected[days]) for days in (30, 90, 365)),
        _clean(backtest),
        _clean(value),
        _clean(lifetime),
    ]


def _clean(values):
    """Floats with inf as NaN (stored as NULL)."""
    values = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(values), values, np.nan)
