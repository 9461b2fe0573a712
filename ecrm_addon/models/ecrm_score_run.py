import contextlib
import functools
import itertools
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from datetime import time as day_time

import numpy as np
import psycopg2
import pytz
from psycopg2.pool import PoolError

from odoo import api, fields, models, sql_db
from odoo.exceptions import UserError, ValidationError
from odoo.tools import SQL

from ..tools.pgcopy import CopyIn, copy_out, date_to_days, int_array, numeric_units
from .ecrm_score_math import (
    distinct_rows,
    local_days,
    quintile_bounds,
    repeat_spend,
    score_batch,
)

_logger = logging.getLogger(__name__)

# Runs write the scored customers into unlogged work tables of their own, named after
# them and dropped when the run ends, in the score table's own columns and types, by
# binary COPY in customer order: one table per batch for runs of the current scores
# (``ecrm_score_result_<run>_<batch>``, each published by one UPDATE while the next
# batches are scored), one table for backtests and runs as of a past date.
RESULT = "ecrm_score_result_"
WORK_TABLES = (RESULT,)
WORK_MEM = re.compile(r"\d+\s*(kB|MB|GB)")
RUN_TYPES = [
    ("full", "Full"),
    ("incremental", "Incremental"),
    ("backtest", "Backtest"),
]
STEPS = [
    ("aggregate", "Aggregate and Score"),
    ("publish", "Publish"),
    ("snapshot", "Monthly Snapshot"),
]
# Customers copied into the monthly history per cron call: the snapshot of a large
# company is spread over calls (each row costs one foreign key check per reference).
SNAPSHOT_BATCH = 200000
# Customers scored per vectorised batch: bounds the memory of the predictions.
BATCH_SIZE = 50000
MIN_BATCH_SIZE = 5000
PIPELINE_BATCHES = 8
# Runs looked at, newest first, for the last one that published the current scores.
PREVIOUS_RUNS = 20
PUBLISHED_FIELDS = ["run_type", "reference_date", "started_at", "create_date"]
# What incremental runs read of the base run (its models) and of the previous run (what
# changed since), fetched with them (else reading one field reads every field of the
# twenty runs found).
MODEL_FIELDS = [
    "bounds",
    "model_fitted",
    "fit_customers",
    "bgnbd_r",
    "bgnbd_alpha",
    "bgnbd_a",
    "bgnbd_b",
    "bgnbd_log_likelihood",
    "gg_p",
    "gg_q",
    "gg_v",
    "gg_log_likelihood",
]
WATERMARK_FIELDS = ["order_watermark", "interaction_watermark"]
# Runs that have published their scores: done, or full runs copying them into the
# monthly history (the snapshot step comes after publishing).
PUBLISHED = ["|", ("state", "=", "done"), "&", ("state", "=", "running"), ("step", "=", "snapshot")]
# Order figures are rolled up in arrays indexed by partner id while the ids are at most
# this many per row (plus DENSE_IDS_MIN): 8 bytes per id and array (see _roll_up).
DENSE_IDS = 2
DENSE_IDS_MIN = 1000000
# Pages that the bitmap scans of an incremental run read ahead (effective_io_concurrency).
PREFETCH_PAGES = 64
# Customers the value models are fitted on, at most (system parameter
# ``ecrm_addon.score_fit_customers``, 0 for all): the estimates' sampling error at this
# size is a fraction of a percent (see ``_fit_sample``), and fitting on all of a large
# company's customers was a second of each run at 1,000,000.
FIT_CUSTOMERS = 250000
# The columns of _get_orders_query: ordering partner, orders, first and last order,
# total, first order's value (as a timestamp: see _copy_orders).
ORDER_TYPES = ["int4", "int8", "timestamp", "timestamp", "float8", "timestamp"]
# Columns of the result table, named and typed as in ecrm_customer_score (published),
# and the one that backtests add.
RESULT_COLUMNS = [
    ("first_order_date", "date"),
    ("last_order_date", "date"),
    ("recency_days", "int4"),
    ("frequency", "int4"),
    ("repeat_purchases", "int4"),
    ("monetary_total", "numeric"),
    ("monetary_avg", "numeric"),
    ("first_order_value", "float8"),
    ("refund_total", "numeric"),
    ("r_score", "varchar"),
    ("f_score", "varchar"),
    ("m_score", "varchar"),
    ("rfm_code", "varchar"),
    ("segment_id", "int4"),
    ("interaction_count_recent", "int4"),
    ("inbound_share", "float8"),
    ("campaign_response_rate", "float8"),
    ("loyalty_score", "float8"),
    ("tier_id", "int4"),
    ("p_alive", "float8"),
    ("churn_risk", "float8"),
    ("expected_purchases_30", "float8"),
    ("expected_purchases_90", "float8"),
    ("expected_purchases_365", "float8"),
    ("expected_order_value", "numeric"),
    ("clv", "numeric"),
]
BACKTEST_COLUMN = ("expected_purchases_backtest", "float8")
# Scores 1..5 and RFM codes as the bytes written into the result table.
DIGITS = np.array([str(score).encode() for score in range(6)])
RFM_CODES = np.array(
    [f"{r}{f}{m}".encode() for r in range(1, 6) for f in range(1, 6) for m in range(1, 6)]
)
# Written as NULL into the result tables: no segment or tier (0), no prediction (NaN).
NULL_WHEN_ZERO = {"segment_id", "tier_id"}
NULL_WHEN_NAN = {
    "p_alive",
    "churn_risk",
    "expected_purchases_30",
    "expected_purchases_90",
    "expected_purchases_365",
    "expected_order_value",
    "clv",
}


class EcrmScoreRun(models.Model):
    """One scoring run of one company, executed step by step by the scheduler.

    aggregate: one query aggregates every customer's orders, credit notes and
        interactions, read by a binary COPY into numpy (one row per customer); full
        runs fit the quintile bounds and the BG/NBD and Gamma-Gamma models on it, then
        batches of customers get their scores and predictions (vectorised). Runs of the
        current scores publish each batch into ``ecrm.customer.score`` as soon as it is
        written (see ``_score_and_publish``) and end there, in one transaction: until it
        commits users see the previous run's scores. Backtests and runs as of a past
        date write one unlogged result table instead, for the next step.
    publish: one transaction writes that table into the backtest lines or the monthly
        history and drops it.
    snapshot: the period's first full run then copies the scores it published into the
        monthly history, SNAPSHOT_BATCH customers per call.

    A killed run resumes at its step: each step can be repeated safely.
    """

    _name = "ecrm.score.run"
    _description = "Customer Scoring Run"
    _order = "id desc"
    _check_company_auto = True

    name = fields.Char(compute="_compute_name")
    company_id = fields.Many2one(
        "res.company", required=True, index=True, default=lambda self: self.env.company
    )
    currency_id = fields.Many2one(related="company_id.currency_id")
    run_type = fields.Selection(RUN_TYPES, required=True, default="full")
    # A day, not an instant: the run counts everything until the end of that day in the
    # company's time zone (see _company_tz), the day's orders included. A datetime made
    # "as of 30 September" 30 September at 00:00: that day's orders were left out while
    # the day counted in every customer's age.
    reference_date = fields.Date(
        required=True,
        default=lambda self: self._company_today(self.env.company),
        help="The run counts the orders, credit notes and interactions until the end of this "
        "day in the company's time zone (the time zone of the company's address, else UTC), "
        "the day included. A day before today scores customers as they were then: the run "
        "fills the score history instead of the current scores. A backtest's day must be at "
        "least its horizon before today.",
    )
    state = fields.Selection(
        [("queued", "Queued"), ("running", "Running"), ("done", "Done"), ("failed", "Failed")],
        required=True,
        default="queued",
        index=True,
    )
    step = fields.Selection(STEPS, readonly=True)
    base_run_id = fields.Many2one(
        "ecrm.score.run",
        string="Model From",
        readonly=True,
        help="Incremental runs reuse the quintiles and fitted models of this full run.",
    )
    started_at = fields.Datetime(readonly=True)
    finished_at = fields.Datetime(readonly=True)
    duration = fields.Float("Duration (s)", readonly=True)
    customers_scored = fields.Integer(readonly=True)
    snapshot_partner_watermark = fields.Integer(
        readonly=True,
        help="The snapshot step has copied the scores of the customers up to this id into "
        "the monthly history.",
    )
    interaction_watermark = fields.Integer(
        readonly=True, help="The last interaction logged when the run started aggregating."
    )
    order_watermark = fields.Integer(
        readonly=True,
        help="The highest sale order id the run could see: the next incremental run adds "
        "the orders above it to the figures of the scores.",
    )
    message = fields.Text(readonly=True)
    bounds = fields.Json(readonly=True, help="Quintile bounds of recency, frequency, monetary.")
    # The estimates in full precision (double precision columns, 6 decimals on screen):
    # rounded to 6 decimals, an estimate at its lower bound became 0 and the run, then
    # the incremental runs copying it, could not score with it.
    bgnbd_r = fields.Float("BG/NBD r", readonly=True)
    bgnbd_alpha = fields.Float("BG/NBD alpha", readonly=True)
    bgnbd_a = fields.Float("BG/NBD a", readonly=True)
    bgnbd_b = fields.Float("BG/NBD b", readonly=True)
    bgnbd_log_likelihood = fields.Float("BG/NBD log-likelihood", readonly=True)
    gg_p = fields.Float("Gamma-Gamma p", readonly=True)
    gg_q = fields.Float("Gamma-Gamma q", readonly=True)
    gg_v = fields.Float("Gamma-Gamma v", readonly=True)
    gg_log_likelihood = fields.Float("Gamma-Gamma log-likelihood", readonly=True)
    model_fitted = fields.Boolean(readonly=True)
    fit_customers = fields.Integer(
        "Customers Fitted",
        readonly=True,
        help="The models are fitted on at most this many of the company's customers, the "
        "same ones from one run to the next (system parameter "
        "ecrm_addon.score_fit_customers, 0 for all of them); every customer is scored.",
    )
    backtest_days = fields.Integer(
        "Backtest Horizon (days)",
        default=180,
        help="Backtests compare predicted and actual purchases over this period after the "
        "reference date.",
    )
    backtest_line_ids = fields.One2many("ecrm.backtest.line", "run_id", readonly=True)
    backtest_predicted = fields.Float(digits=(16, 1), readonly=True)
    backtest_actual = fields.Float(digits=(16, 1), readonly=True)
    backtest_error = fields.Float(
        "Backtest Error (%)", digits=(16, 2), readonly=True, help="(predicted - actual) / actual."
    )

    def _work_table(self, prefix, as_name=False):
        name = f"{prefix}{self.id}"
        return name if as_name else SQL.identifier(name)

    def _batch_table(self, number):
        """The name of the run's batch ``number`` table (runs publishing while scoring)."""
        return f"{RESULT}{self.id}_{number}"

    def _drop_work_tables(self, cr=None):
        """Drop the runs' work tables that ``cr`` (default: this transaction's) sees."""
        if not self:
            return
        cr = cr or self.env.cr
        cr.execute(
            SQL(
                "SELECT relname FROM pg_class WHERE relkind = 'r' AND relname ~ %s",
                rf"^({'|'.join(WORK_TABLES)})({'|'.join(map(str, self.ids))})(_[0-9]+)?$",
            )
        )
        names = [name for (name,) in cr.fetchall()]
        if names:
            cr.execute(
                SQL(
                    "DROP TABLE IF EXISTS %s",
                    SQL(", ").join(SQL.identifier(name) for name in names),
                )
            )

    @api.model
    def _gc_work_tables(self, keep_pending=True):
        """Drop the work tables of runs that are over or gone (a run killed for good);
        with ``keep_pending=False`` (uninstall), every run's."""
        pattern = re.compile(rf"^(?:{'|'.join(WORK_TABLES)})([0-9]+)(?:_[0-9]+)?$")
        self.env.cr.execute(
            SQL(
                "SELECT relname FROM pg_class WHERE relkind = 'r' AND relname ~ %s",
                pattern.pattern,
            )
        )
        run_ids = {int(pattern.match(name)[1]) for (name,) in self.env.cr.fetchall()}
        # sudo: a technical clean-up of every company's runs, whatever the cron user sees
        runs = self.sudo().browse(run_ids)
        if keep_pending:
            runs -= runs.exists().filtered(lambda run: run.state in ("queued", "running"))
        runs._drop_work_tables()

    @staticmethod
    def _published(name, alias="f"):
        """The published value of a result column (NULL for no segment, no prediction):
        a result table of a run started before an upgrade holds 0 and NaN instead."""
        column = SQL.identifier(alias, name)
        if name in NULL_WHEN_ZERO:
            return SQL("NULLIF(%s, 0)", column)
        if name in NULL_WHEN_NAN:
            return SQL("NULLIF(%s, 'NaN')", column)
        return column

    @api.constrains("run_type", "reference_date", "backtest_days", "company_id")
    def _check_backtest_horizon(self):
        for run in self:
            if error := run._backtest_not_over():
                raise ValidationError(error)

    def _backtest_not_over(self):
        """For a backtest whose horizon has not fully passed (its actual purchases are
        not all known), the message refusing it; else None."""
        if self.run_type != "backtest" or not self.reference_date:
            return None
        days = self.backtest_days
        if days < 1:
            return self.env._("A backtest compares a period of at least one day.")
        end = self.reference_date + timedelta(days=days)
        if self._day_end(end) <= fields.Datetime.now():
            return None
        return self.env._(
            "A backtest as of %(date)s over %(days)s days compares its predictions with the "
            "purchases until the end of %(end)s, which has not passed yet: choose a day "
            "on or before %(latest)s, or a shorter horizon.",
            date=fields.Date.to_string(self.reference_date),
            days=days,
            end=fields.Date.to_string(end),
            latest=fields.Date.to_string(
                self._company_today(self.company_id) - timedelta(days=days + 1)
            ),
        )

    @api.depends("company_id", "run_type", "reference_date")
    def _compute_name(self):
        types = dict(RUN_TYPES)
        for run in self:
            run.name = self.env._(
                "%(type)s scoring of %(company)s as of %(date)s",
                type=types.get(run.run_type, ""),
                company=run.company_id.name or "",
                date=fields.Date.to_string(run.reference_date) if run.reference_date else "",
            )

    # ------------------------------------------------------------
    # Actions
    # ------------------------------------------------------------

    def action_recompute_now(self):
        """Queue a full run for each of the user's current companies and wake the cron.

        A list header button: the web client passes the selected runs, which are ignored.
        """
        if not self.env.user.has_group("ecrm_addon.group_ecrm_manager"):
            raise UserError(self.env._("Only e-CRM administrators recompute the scores."))
        for company in self.env.companies:
            self._queue_run(company, "full")
        self.env.ref("ecrm_addon.ir_cron_ecrm_score")._trigger()
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "type": "info",
                "message": self.env._("The scores are being recomputed in the background."),
                "next": {"type": "ir.actions.act_window_close"},
            },
        }

    def action_run_now(self):
        """Run queued runs to the end in this transaction (managers, small databases)."""
        for run in self.filtered(lambda r: r.state in ("queued", "running")):
            run._execute_all()
        return True

    # ------------------------------------------------------------
    # Scheduler
    # ------------------------------------------------------------

    @api.model
    def _cron_ecrm_score(self, run_type="full", batch_size=BATCH_SIZE):
        """One step of one run per call; the cron runner calls again while work remains."""
        pending = self._get_pending_runs()
        if not pending:
            self._gc_work_tables()
            for company in self.env["res.company"].search([("active", "=", True)]):
                self._queue_run(company, run_type)
            pending = self._get_pending_runs()
        done = 0
        if pending:
            done = pending[0]._execute_step(batch_size=batch_size)
        remaining = self.search_count([("state", "in", ("queued", "running"))])
        self.env["ir.cron"]._notify_progress(done=done, remaining=remaining)

    @api.model
    def _get_pending_runs(self):
        return self.search([("state", "in", ("queued", "running"))], order="id")

    @api.model
    def _queue_run(self, company, run_type, reference_date=None):
        """Queue a run of ``company`` as of ``reference_date``: a day, or an instant
        (a naive UTC datetime, Odoo's) taken as its day in the company's time zone;
        by default the company's today."""
        if run_type == "incremental" and not self._get_base_run(company):
            run_type = "full"  # nothing to be incremental from
        if isinstance(reference_date, datetime):
            reference_date = self._company_today(company, reference_date)
        return self.create(
            {
                "company_id": company.id,
                "run_type": run_type,
                "reference_date": reference_date or self._company_today(company),
            }
        )

    def _get_base_run(self, company):
        """The company's last full run of the current scores: incremental runs score
        with its quintiles and fitted models."""
        return self._last_published_run(
            company,
            [("run_type", "=", "full"), ("reference_date", "<=", self._company_today(company))],
            "reference_date desc, id desc",
            MODEL_FIELDS,
        )

    def _get_previous_run(self):
        """The company's last run that published the current scores (full or
        incremental): an incremental run rescores what changed since it started.

        Runs as of a past date and backtests are left out: they published no scores,
        and what changed between the scores and them would be missed. A full run still
        copying its scores into the history has published them: it is the previous
        run (else its new orders would be added to the scores a second time).
        """
        return self._last_published_run(
            self.company_id,
            [("run_type", "in", ("full", "incremental"))],
            "started_at desc, id desc",
            WATERMARK_FIELDS,
        )

    def _last_published_run(self, company, domain, order, field_names=()):
        """The first, in ``order``, of the company's runs matching ``domain`` that
        published the current scores (see PUBLISHED and ``_publishes_while_scoring``),
        its ``field_names`` read with it."""
        runs = self.search_fetch(
            [("company_id", "=", company.id), *PUBLISHED, *domain],
            [*PUBLISHED_FIELDS, *field_names],
            order=order,
            limit=PREVIOUS_RUNS,
        )
        return next((run for run in runs if run._publishes_while_scoring()), runs.browse())

    def _execute_all(self, batch_size=BATCH_SIZE):
        self.ensure_one()
        while self.state in ("queued", "running"):
            self._execute_step(batch_size=batch_size)

    def _execute_step(self, batch_size=BATCH_SIZE):
        """Run the next step; return the number of customers it handled."""
        self.ensure_one()
        if self.state == "queued" and (error := self._backtest_not_over()):
            # Queued before the check existed, or by SQL: it would report no purchases.
            self.write({"state": "failed", "message": error, "finished_at": fields.Datetime.now()})
            return 0
        # A step writes what running it again would write (scores, snapshots, the run's
        # progress): its transaction's commit need not wait for the log to reach the
        # disk (a few milliseconds, a twentieth of an incremental run). A server crash
        # right after it may lose the step as a whole, never part of it: the run is then
        # where it was before, and the next cron call runs the step again, as after a
        # kill. Compiling the steps' expressions (JIT) costs more than it saves.
        self._set_local(synchronous_commit="off", jit="off")
        if self.state == "queued":
            self.write(
                {"state": "running", "step": "aggregate", "started_at": fields.Datetime.now()}
            )
        start = time.perf_counter()
        if self.step == "aggregate":
            count = self._step_aggregate(batch_size)
        elif self.step == "snapshot":
            count = self._step_snapshot()
        else:
            count = self._step_publish()
        self.duration += time.perf_counter() - start
        return count

    # ------------------------------------------------------------
    # Steps
    # ------------------------------------------------------------

    def _settings(self):
        params = self.env["ir.config_parameter"].sudo()  # sudo: scoring settings
        states = params.get_param("ecrm_addon.score_order_states", "sale")
        return {
            "states": tuple(state.strip() for state in states.split(",") if state.strip())
            or ("sale",),
            "weights": [
                float(params.get_param(f"ecrm_addon.loyalty_weight_{name}", default))
                for name, default in (
                    ("recency", 30),
                    ("frequency", 25),
                    ("monetary", 25),
                    ("engagement", 20),
                )
            ],
            "horizon": int(params.get_param("ecrm_addon.clv_horizon_days", 365)),
            "discount": float(params.get_param("ecrm_addon.clv_discount_rate", 0.10)),
        }

    def _reference_day(self):
        """The day the run is as of (in the company's time zone)."""
        return self.reference_date

    def _reference_end(self):
        """The end of the reference day in the company's time zone, as a naive UTC
        datetime (Odoo's): the run counts what is dated before it."""
        return self._day_end(self.reference_date)

    def _day_end(self, day):
        """The end of ``day`` in the company's time zone (the next day's first instant
        there), as a naive UTC datetime."""
        tz = pytz.timezone(self._company_tz())
        start = tz.localize(datetime.combine(day + timedelta(days=1), day_time.min), is_dst=False)
        return start.astimezone(pytz.utc).replace(tzinfo=None)

    @api.model
    def _company_today(self, company, when=None):
        """The day of ``when`` (a naive UTC datetime, default now) in ``company``'s time
        zone (see ``_company_tz``)."""
        tz = pytz.timezone(self._company_tz(company))
        return pytz.utc.localize(when or fields.Datetime.now()).astimezone(tz).date()

    def _company_currency(self):
        """The company's currency (only the fields needed: reading the company whole
        costs a few milliseconds, a tenth of a small incremental run)."""
        company = self.company_id
        company.fetch(["currency_id", "partner_id"])  # one query for both (_company_tz)
        return company.currency_id

    def _currency_scale(self):
        """Decimal places of the company's currency."""
        currency = self._company_currency()
        currency.fetch(["decimal_places"])
        return currency.decimal_places

    def _company_tz(self, company=None):
        """The time zone of the run's days: the one of the company's address (its
        partner), else UTC.

        On purpose not the user's as a fallback: a run's days (the reference day, the
        first and last purchase days, which incremental runs add to) must not depend on
        who queued it or runs it, nor differ between the cron and a manager's click."""
        # Only the fields needed: reading the company and its partner whole costs 10 ms.
        company = company or self.company_id
        company.fetch(["currency_id", "partner_id"])  # one query for both (_currency_scale)
        company.partner_id.fetch(["tz"])
        return company.partner_id.tz or "UTC"

    def _get_changes(self, previous, states):
        """What an incremental run rescores since the ``previous`` run started: the
        commercial partners whose figures are aggregated again from all their orders
        (a list), and the figures of the others, their scores' plus their new orders
        (a dict of arrays, see ``_get_additions``; None: every one is aggregated again).

        Changes are found through indexes:

        - orders above the previous run's order watermark: new to it, whatever their
          dates (orders are numbered when created: it could not see them, and no score
          counts them), so they are added to the customer's score;
        - orders created or confirmed since the previous run started (confirming sets
          the order date) below the watermark: the previous run may have seen them
          before they counted (quotations), the customer is aggregated again;
        - interactions logged since (ids above the previous run's watermark): the
          customer's engagement is computed again, its order figures are its score's;
        - customers whose rescoring was requested (orders cancelled, credit notes
          posted or set back to draft: see ``_request_rescore``): aggregated again.

        Other edits of older orders (an amount changed after confirmation) and later
        changes to older interactions wait for the next full run.
        """
        since, watermark = previous.started_at, previous.order_watermark
        # Bitmap scans: the rows, spread over the tables, are read in table order and
        # ahead of need (see _prefetch_pages).
        with self._without_index_scans():
            self.env.cr.execute(
                SQL(
                    """
                    SELECT p.commercial_partner_id
                      FROM res_partner p
                     WHERE p.id = ANY(ARRAY(
                           SELECT o.partner_id FROM sale_order o
                            WHERE o.company_id = %(company)s AND o.state IN %(states)s
                              AND (o.create_date >= %(since)s OR o.date_order >= %(since)s)
                              AND %(old)s))
                     UNION
                    SELECT p.commercial_partner_id
                      FROM ecrm_customer_score c JOIN res_partner p ON p.id = c.partner_id
                     WHERE c.company_id = %(company)s AND c.rescore_requested_at IS NOT NULL
                    """,
                    company=self.company_id.id,
                    states=states,
                    since=since,
                    old=SQL("o.id <= %s", watermark) if watermark else SQL("TRUE"),
                )
            )
            rescan = {row[0] for row in self.env.cr.fetchall() if row[0]}
            self.env.cr.execute(
                SQL(
                    """SELECT DISTINCT i.commercial_partner_id FROM ecrm_interaction i
                        WHERE i.id > %s AND i.company_id = %s
                          AND i.commercial_partner_id IS NOT NULL""",
                    previous.interaction_watermark,
                    self.company_id.id,
                )
            )
            engaged = [row[0] for row in self.env.cr.fetchall()]
            if not watermark:
                # The previous run predates order watermarks: every customer again.
                return sorted(rescan.union(engaged)), None
            additions = self._get_additions(states, watermark, rescan, engaged)
        return sorted(rescan), additions

    def _get_additions(self, states, watermark, rescan, engaged):
        """The figures of the customers with new orders (above ``watermark``) or new
        interactions (``engaged``) and not in ``rescan``: their scores' order figures
        plus their new orders'. Customers without a score are added to ``rescan``.

        Customers whose new orders are dated on or before their first order's day, or
        whose score predates the first order's value, are added to ``rescan`` too:
        which order is their first is known from all their orders only.

        Returns a dict of arrays in customer order: partner_id, frequency, first_day,
        last_day (local days since 2000-01-01), order_total, first_value.
        """
        cr = self.env.cr
        partner, frequency, first, last, total, first_value = self._copy_orders(
            self._get_orders_query(states, new_since=watermark)
        )
        if len(partner):
            ordering, companies = copy_out(
                cr,
                SQL(
                    """SELECT id, commercial_partner_id FROM res_partner
                        WHERE id = ANY(%s) AND commercial_partner_id IS NOT NULL""",
                    int_array(np.unique(partner)),
                ),
                ["int4", "int4"],
            )
            partner, frequency, first, last, total, first_value = self._roll_up(
                (ordering, companies), partner, frequency, first, last, total, first_value
            )
        tz = self._company_tz()
        new = {
            "partner_id": partner,
            "frequency": frequency,
            "first_day": local_days(first, tz),
            "last_day": local_days(last, tz),
            "order_total": total,
        }
        candidates = np.setdiff1d(
            np.union1d(partner, np.asarray(engaged, dtype=np.int32)),
            np.fromiter(rescan, dtype=np.int32, count=len(rescan)),
        )
        # The figures of their scores, as published: the order total is the monetary
        # value before credit notes (read again, as the engagement).
        names = ("partner_id", "frequency", "first_day", "last_day", "order_total", "first_value")
        stored = dict(
            zip(
                names,
                copy_out(
                    cr,
                    SQL(
                        """SELECT partner_id, frequency::int8, first_order_date,
                                  last_order_date,
                                  (COALESCE(monetary_total, 0) + COALESCE(refund_total, 0))::float8,
                                  first_order_value
                             FROM ecrm_customer_score
                            WHERE company_id = %s AND partner_id = ANY(%s) AND frequency > 0
                              AND first_order_date IS NOT NULL AND last_order_date IS NOT NULL
                              AND first_order_value IS NOT NULL
                         ORDER BY partner_id""",
                        self.company_id.id,
                        int_array(candidates),
                    ),
                    ["int4", "int8", "date", "date", "float8", "float8"],
                ),
                strict=True,
            )
        )
        # A new order on or before the day of a customer's first one may be the first.
        new_first = self._by_customer(
            stored["partner_id"], new["partner_id"], new["first_day"], np.iinfo(np.int64).max
        )
        kept = new_first > stored["first_day"]
        if not kept.all():
            stored = {name: values[kept] for name, values in stored.items()}
        customers = stored["partner_id"]
        rescan.update(np.setdiff1d(candidates, customers).tolist())
        for name, default, combine in (
            ("frequency", 0, np.add),
            ("order_total", 0.0, np.add),
            ("first_day", np.iinfo(np.int64).max, np.minimum),
            ("last_day", np.iinfo(np.int64).min, np.maximum),
        ):
            added = self._by_customer(customers, new["partner_id"], new[name], default)
            stored[name] = combine(stored[name], added)
        return stored

    def _step_aggregate(self, batch_size=BATCH_SIZE):
        settings = self._settings()
        customers, changed = self._aggregate_customers(settings)
        count = len(customers["partner_id"])
        if self.run_type != "incremental":
            # At least PIPELINE_BATCHES batches: the first batch's scoring and the last
            # one's writing are the only parts that nothing overlaps. An incremental
            # run's few customers are one batch: their scores are updated through the
            # index, one by one, rather than by ranges of the table.
            batch_size = min(batch_size, max(MIN_BATCH_SIZE, -(-count // PIPELINE_BATCHES)))
        batch_size = max(1, batch_size)
        publishes = self._publishes_while_scoring()
        with contextlib.ExitStack() as stack:
            # What publishing needs before the first batch is prepared while the models
            # are fitted (0.04-0.1 s each at 100,000 customers).
            prepare = None
            if publishes:
                prepare = functools.partial(self._prepare_publishing, stack, count > batch_size)
            if self.run_type == "incremental":
                self._copy_model_from(self.base_run_id)
                prepared = prepare and prepare()
            else:
                prepared = self._fit(customers, alongside=prepare)
            scorer = self._scorer(settings)
            if publishes:
                self._score_and_publish(customers, scorer, batch_size, prepared, prefetch=changed)
            else:
                self._score_into_result(customers, scorer, batch_size)
        if not publishes:
            self.write({"step": "publish", "customers_scored": count})
        elif self.run_type == "full" and not self._history_exists():
            # The period's first full run is its snapshot (an incremental run holds only
            # the customers it rescored), copied from the scores in the next calls.
            self.write(
                {"step": "snapshot", "customers_scored": count, "snapshot_partner_watermark": 0}
            )
        else:
            self.write(
                {
                    "state": "done",
                    "step": False,
                    "customers_scored": count,
                    "finished_at": fields.Datetime.now(),
                }
            )
        return count

    def _aggregate_customers(self, settings):
        """The run's customers aggregated (see ``_aggregate``) and, for an incremental
        run, the ids of the customers aggregated again (else None)."""
        # Everything below reads with SQL: flush, captures pending in this transaction too.
        self.env.flush_all()
        self.env["ecrm.interaction"].flush_model()
        cr = self.env.cr
        # Memory to aggregate a company's orders without spilling to disk (and for the
        # bitmaps of an incremental run's scans to stay exact).
        settings_sql = {"work_mem": self._work_mem()}
        if self.run_type == "incremental":
            # The changed customers' rows are spread over the tables: read in the order
            # of their pages, several at a time; through indexes, as they are few:
            # starting parallel workers for each query would cost more than reading them.
            settings_sql["effective_io_concurrency"] = self._prefetch_pages()
            settings_sql["max_parallel_workers_per_gather"] = "0"
        self._set_local(**settings_sql)
        changed = additions = None
        if self.run_type == "incremental":
            base = self._get_base_run(self.company_id)
            self.base_run_id = base
            changed, additions = self._get_changes(
                self._get_previous_run() or base, settings["states"]
            )
        # What this run sees, in the snapshot of its aggregation (this transaction's).
        cr.execute(
            SQL(
                """SELECT (SELECT COALESCE(max(id), 0) FROM ecrm_interaction),
                          (SELECT COALESCE(max(id), 0) FROM sale_order)"""
            )
        )
        self.interaction_watermark, self.order_watermark = cr.fetchone()
        self.env.flush_all()  # the run's own fields
        scans = contextlib.nullcontext()
        if changed is None:
            # All of the company's orders are read: the planner likes to read them in
            # partner order through the partner_id index, i.e. one random heap access per
            # order, much slower than the sequential scan.
            scans = self._without_index_scans()
        with scans:
            customers = self._aggregate(settings["states"], changed, additions)
        return customers, changed

    def _score_into_result(self, customers, scorer, batch_size):
        """Score the customers into the run's result table, which the publish step reads
        (backtests, runs as of a past date)."""
        self._drop_work_tables()  # a killed attempt's
        self._create_result_table(self.env.cr, self._work_table(RESULT), self._result_columns())
        writer = self._result_writer()
        # Each batch is written (encoded, then parsed by PostgreSQL) while the next one
        # is scored: one thread sends, the other computes (numpy and COPY release the
        # GIL), and the cursor is only used by the sending thread meanwhile.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ecrm_score_copy") as sender:
            sending = None
            for batch in self._batches(customers, batch_size):
                columns = scorer(batch)
                if sending:
                    sending.result()
                sending = sender.submit(writer.append, self.env.cr, columns)
            if sending:
                sending.result()

    @staticmethod
    def _batches(customers, batch_size, first=None):
        """The customers' arrays, ``batch_size`` customers at a time (views, no copy);
        with ``first``, the batches grow from ``first`` customers, doubling."""
        count = len(customers["partner_id"])
        ends, size = [0], first or batch_size
        while ends[-1] < count:
            ends.append(min(ends[-1] + size, count))
            size = min(2 * size, batch_size)
        for start, end in itertools.pairwise(ends):
            yield {name: values[start:end] for name, values in customers.items()}

    def _publishes_while_scoring(self):
        """Runs of the current scores publish them while scoring, in one step; backtests
        and runs as of a past date fill a result table that the publish step reads."""
        return self.run_type != "backtest" and not self._is_past()

    def _is_past(self):
        """Whether the run is as of a day before the day it started (or today, before
        it starts) in the company's time zone: it scores for the history only."""
        started = self.started_at or self.create_date or fields.Datetime.now()
        return self.reference_date < self._company_today(self.company_id, started)

    def _set_local(self, **settings):
        """Set PostgreSQL ``settings`` (values: text or SQL expressions) until the end
        of this transaction, in one statement: each one is a round trip, a third of a
        millisecond here, and a small incremental run takes a few dozen."""
        self.env.cr.execute(
            SQL(
                "SELECT %s",
                SQL(", ").join(
                    SQL("set_config(%s, %s, true)", name, value) for name, value in settings.items()
                ),
            )
        )

    @staticmethod
    def _prefetch_pages():
        """The ``effective_io_concurrency`` of an incremental run's bitmap scans:
        PREFETCH_PAGES pages asked for ahead (1 by default: one read at a time), unless
        the server is set higher.

        The orders of 10,000 changed customers out of 1,000,000 are about 100,000 rows
        on as many pages of the order table. Read through the partner index one page at
        a time, with nothing in the system's cache: 12.4 and 14.3 s; as a bitmap scan
        reading ahead: 2.8 and 3.2 s. With the pages cached both take about 0.6 s.
        """
        return SQL(
            "GREATEST(current_setting('effective_io_concurrency')::int, %s)::text",
            PREFETCH_PAGES,
        )

    @contextlib.contextmanager
    def _without_index_scans(self):
        """Plan the statements run inside without index scans (bitmap or sequential
        scans instead), then put the setting back as it was."""
        cr = self.env.cr
        cr.execute(
            SQL(
                """SELECT current_setting('enable_indexscan'),
                          set_config('enable_indexscan', 'off', true)"""
            )
        )
        previous = cr.fetchone()[0]
        yield
        self._set_local(enable_indexscan=previous)

    def _work_mem(self):
        """Memory of the aggregation's hash tables (system parameter
        ``ecrm_addon.score_work_mem``)."""
        params = self.env["ir.config_parameter"].sudo()  # sudo: scoring settings
        value = (params.get_param("ecrm_addon.score_work_mem") or "1GB").strip()
        if not WORK_MEM.fullmatch(value):
            _logger.warning("ecrm: ecrm_addon.score_work_mem %r is not like 1GB: 256MB used", value)
            value = "256MB"
        return value

    def _aggregate(self, states, changed=None, additions=None):
        """Every customer's aggregated orders, credit notes and interactions, as numpy
        arrays in customer order, with the BG/NBD summary in days (x, t_x, age, recency).

        ``changed``: the customers an incremental run aggregates again (None: every
        customer); ``additions``: the figures of the other ones it rescores (see
        ``_get_additions``). Three queries, each one hash aggregate over one table,
        read by binary COPY; the rest is done on one row per customer in numpy: the
        roll-up of contacts' orders to their company, the local days of the first and
        last orders (in SQL, the time zone conversions alone cost a tenth of the
        aggregation) and the joins.
        """
        customers = self._order_figures(states, changed)
        if additions is not None and len(additions["partner_id"]):
            # Two sets of customers, each in customer order: merged.
            order = np.argsort(
                np.concatenate([customers["partner_id"], additions["partner_id"]]),
                kind="stable",
            )
            customers = {
                name: np.concatenate([values, additions[name]]).astype(values.dtype)[order]
                for name, values in customers.items()
            }
        partner = customers["partner_id"]
        scope = None if changed is None else int_array(partner)
        cr = self.env.cr
        refund_partner, refund = copy_out(cr, self._get_refunds_query(scope), ["int4", "float8"])
        customers["refund"] = self._by_customer(partner, refund_partner, refund, 0.0)
        engaged, recent, inbound, response = copy_out(
            cr, self._get_engagement_query(scope), ["int4", "int4", "float8", "float8"]
        )
        customers["interactions_90d"] = self._by_customer(partner, engaged, recent, 0)
        customers["inbound_share"] = self._by_customer(partner, engaged, inbound, 0.0)
        customers["response_rate"] = self._by_customer(partner, engaged, response, 0.0)
        ref_day = date_to_days(self._reference_day())
        customers["x"] = customers["frequency"] - 1
        customers["t_x"] = customers["last_day"] - customers["first_day"]
        customers["age"] = ref_day - customers["first_day"]
        customers["recency_days"] = ref_day - customers["last_day"]
        return customers

    def _order_figures(self, states, changed=None):
        """Per customer (commercial partner), in customer order: partner_id,
        frequency, first_day and last_day (local days since 2000-01-01), order_total,
        first_value (the first order's); of every customer, or of the ``changed`` ones
        (ids)."""
        cr = self.env.cr
        if changed is not None and not len(changed):
            partner = np.zeros(0, dtype=np.int32)
            frequency, first, last = (np.zeros(0, dtype=np.int64) for _ in range(3))
            total, first_value = (np.zeros(0, dtype=np.float64) for _ in range(2))
        else:
            # Orders of a company's contacts count for the company (its commercial entity).
            contacts = copy_out(cr, self._get_contacts_query(changed), ["int4", "int4"])
            ordering, scans = None, contextlib.nullcontext()
            if changed is not None:
                ordering = np.unique(
                    np.concatenate([np.asarray(changed, dtype=np.int32), contacts[0]])
                )
                # By a bitmap scan: the orders' pages in table order and read ahead of
                # need (see _prefetch_pages), rather than one after the other in partner
                # order.
                scans = self._without_index_scans()
            with scans:
                partner, frequency, first, last, total, first_value = self._roll_up(
                    contacts, *self._copy_orders(self._get_orders_query(states, ordering))
                )
        tz = self._company_tz()
        return {
            "partner_id": partner,
            "frequency": frequency.astype(np.int32),
            "first_day": local_days(first, tz).astype(np.int32),
            "last_day": local_days(last, tz).astype(np.int32),
            "order_total": total,
            "first_value": first_value,
        }

    def _copy_orders(self, query):
        """The columns of an orders query (see ``_get_orders_query``) as arrays, the
        first order's value as a float (it comes as the microseconds of a timestamp
        since 2000-01-01, which has to be 2000-01-01 plus the value in seconds)."""
        *figures, first_value = copy_out(self.env.cr, query, ORDER_TYPES)
        return (*figures, first_value / 1e6)

    @staticmethod
    def _roll_up(contacts, partner, frequency, first, last, total, first_value):
        """Order figures per ordering partner rolled up to their commercial partners
        (``contacts``: arrays of partner ids and of their commercial partner ids, for
        the partners that have another one), in customer order: so are the result
        table and the new score rows, so that publishing updates the score table page
        after page.

        The first order's value (``first_value``) is the one of the row with the
        earliest first order (at the same instant, the smaller value, as in SQL).

        Partner ids are numbered from 1 and most partners are customers: arrays indexed
        by id then replace sorting the rows (0.07-0.12 s against 0.14-0.19 s for
        1,000,000, 0.5 against 0.7 s the first time in a process), at 8 bytes per id
        and array. Ids spread wider than DENSE_IDS per row are sorted instead.
        """
        contacts, companies = contacts
        size = 1 + max(
            (int(ids.max()) for ids in (partner, contacts, companies) if len(ids)), default=0
        )
        if size > DENSE_IDS * len(partner) + DENSE_IDS_MIN:
            return EcrmScoreRun._roll_up_sorted(
                (contacts, companies), partner, frequency, first, last, total, first_value
            )
        lookup = np.arange(size, dtype=np.int32)
        lookup[contacts] = companies
        partner = lookup[partner]
        counts = np.bincount(partner, minlength=size)
        customers = np.flatnonzero(counts)
        if len(customers) == len(partner):  # each customer on one row: no sums
            row = np.empty(size, dtype=np.intp)
            row[partner] = np.arange(len(partner))
            order = row[customers]
            return (
                customers.astype(np.int32),
                *(values[order] for values in (frequency, first, last, total, first_value)),
            )
        first_of = np.full(size, np.iinfo(np.int64).max)
        last_of = np.full(size, np.iinfo(np.int64).min)
        np.minimum.at(first_of, partner, first)
        np.maximum.at(last_of, partner, last)
        # Of the rows holding their customer's first order, the smaller value.
        earliest = first == first_of[partner]
        first_value_of = np.full(size, np.inf)
        np.minimum.at(first_value_of, partner[earliest], first_value[earliest])
        return (
            customers.astype(np.int32),
            np.bincount(partner, weights=frequency, minlength=size)[customers].astype(np.int64),
            first_of[customers],
            last_of[customers],
            np.bincount(partner, weights=total, minlength=size)[customers],
            first_value_of[customers],
        )

    @staticmethod
    def _roll_up_sorted(contacts, partner, frequency, first, last, total, first_value):
        """``_roll_up`` by sorting the rows (ids spread wide)."""
        contacts, companies = contacts
        if len(contacts):
            order = np.argsort(contacts)
            contacts, companies = contacts[order], companies[order]
            index = np.clip(np.searchsorted(contacts, partner), 0, len(contacts) - 1)
            partner = np.where(contacts[index] == partner, companies[index], partner)
        # By customer, each one's rows from the earliest first order (at the same
        # instant, the smaller value): its first row holds the first order.
        order = np.lexsort((first_value, first, partner))
        partner, frequency, first, last, total, first_value = (
            values[order] for values in (partner, frequency, first, last, total, first_value)
        )
        starts = np.flatnonzero(np.r_[True, partner[1:] != partner[:-1]]) if len(partner) else []
        if len(starts) < len(partner):
            partner = partner[starts]
            frequency = np.add.reduceat(frequency, starts)
            total = np.add.reduceat(total, starts)
            first = first[starts]
            first_value = first_value[starts]
            last = np.maximum.reduceat(last, starts)
        return partner, frequency, first, last, total, first_value

    @staticmethod
    def _by_customer(customers, keys, values, default):
        """``values`` (one per key, keys distinct) aligned on the sorted ``customers``."""
        result = np.full(len(customers), default, dtype=values.dtype)
        if len(keys) and len(customers):
            index = np.clip(np.searchsorted(customers, keys), 0, len(customers) - 1)
            found = customers[index] == keys
            result[index[found]] = values[found]
        return result

    def _get_contacts_query(self, changed=None):
        """The contacts (id, commercial partner) whose orders count for another partner:
        all of them, or those of the ``changed`` customers (commercial partners).

        The changed customers' contacts are found from their parents down (the parent
        index, a few contacts' rows) rather than by commercial partner, which read the
        row of every changed customer: 124 against 76 ms for 10,000 of 1,000,000.
        """
        if changed is None:
            return SQL(
                """SELECT id, commercial_partner_id FROM res_partner
                    WHERE parent_id IS NOT NULL AND commercial_partner_id != id
                      AND commercial_partner_id IS NOT NULL"""
            )
        return SQL(
            """
            WITH RECURSIVE family(id) AS (
                SELECT p.id FROM res_partner p WHERE p.parent_id = ANY(%(changed)s)
              UNION
                SELECT p.id FROM res_partner p JOIN family f ON p.parent_id = f.id
            )
            SELECT p.id, p.commercial_partner_id FROM res_partner p
             WHERE p.id IN (SELECT id FROM family) AND p.commercial_partner_id != p.id
               AND p.commercial_partner_id = ANY(%(changed)s)
            """,
            changed=int_array(changed),
        )

    def _get_orders_query(self, states, partners=None, new_since=None):
        """One row per ordering partner: orders, first and last order (UTC), total in
        the company's currency; only the orders of ``partners`` (ids) if given, or
        those numbered above ``new_since``.

        Repeat purchases (BG/NBD's x) are repeat orders: ``frequency - 1``. Counting
        distinct days instead sorted every order of the company (PostgreSQL 15 has no
        presorted DISTINCT aggregates): 2.5 times the bare RFM query at 10,000,000
        orders, for the few customers who order twice a day.

        The last column is the value of the partner's first order (the earliest; at
        the same instant, the smaller), as a timestamp: 2000-01-01 plus the value in
        seconds (microseconds since 2000-01-01 in the binary COPY, see
        ``_copy_orders``). The Gamma-Gamma spend model takes the mean of the repeat
        orders only (see ``_fit``). It comes from the same pass: the smallest pair
        (date, value) of the partner's orders, as an array of two timestamps, which
        also gives the first order's date. Timestamps compare as integers; a pair of
        floats, the date taken through ``date_part``, cost twice as much (parsing the
        unit name at each order), an ordered aggregate sorts every order, a second
        scan reads them all again.

        Each order's amount is converted to float8 once (see ``_order_amount``), for
        both the total and the first order's value.
        """
        order_scope = SQL("TRUE")
        if partners is not None:
            # One array: the orders are read in one scan (see _aggregate).
            order_scope = SQL("o.partner_id = ANY(%s)", int_array(partners))
        elif new_since is not None:
            # The orders numbered after ``new_since`` (see _get_additions).
            order_scope = SQL("o.id > %s", new_since)
        return SQL(
            """
            SELECT partner_id, orders, first[1], last, total, first[2]
              FROM (
                SELECT o.partner_id, count(*) AS orders,
                       min(ARRAY[o.date_order, timestamp '2000-01-01'
                                 + o.amount * interval '1 second']) AS first,
                       max(o.date_order) AS last, sum(o.amount) AS total
                  FROM (
                    SELECT o.partner_id, o.date_order, %(amount)s AS amount
                      FROM sale_order o
                     WHERE o.company_id = %(company)s AND o.state IN %(states)s
                       AND o.date_order < %(end)s AND %(order_scope)s
                  ) o
              GROUP BY o.partner_id
              ) figures
            """,
            amount=self._order_amount(),
            company=self.company_id.id,
            states=states,
            end=self._reference_end(),
            order_scope=order_scope,
        )

    def _order_amount(self):
        """An order's (``o``) untaxed amount in the company's currency, as float8 (0
        when unknown), for the inner query of ``_get_orders_query``.

        Converted once per order: numeric to float8 goes through text in PostgreSQL
        15, and the total and the first order's value both need it. A subquery's
        column is an expression that the planner copies into each use when it merges
        the subquery into the query around it, which it does not do for a subquery
        whose columns call a volatile function (it would run it several times). The
        call to the volatile ``clock_timestamp()`` behind ``false AND`` keeps the
        subquery apart and is folded away at planning: no call is made. ``OFFSET 0``,
        the usual fence, also kept it apart, but without parallel workers. Measured
        at 1,000,000 orders, serial CPU of the query: 0.63-0.75 s, against
        0.70-0.95 s with the amount converted twice and 0.44-0.56 s without the first
        order's value.

        Orders in the company's currency (rate 1) need no division; told apart by
        their currency (integers compared) rather than by their rate (a numeric): the
        aggregation takes 3 to 5 percent less time. Amounts of 0 rather than NULL in
        the sums: the same total (a partner's sum of NULLs was 0 too).
        """
        return SQL(
            """COALESCE(
                 CASE WHEN false AND clock_timestamp() IS NULL THEN NULL
                      WHEN o.currency_id = %s THEN o.amount_untaxed::float8
                      ELSE o.amount_untaxed::float8
                           / COALESCE(NULLIF(o.currency_rate, 0), 1)::float8
                 END, 0)""",
            self._company_currency().id,
        )

    def _customer_scope(self, alias, changed):
        if changed is None:
            return SQL("%s.commercial_partner_id IS NOT NULL", SQL.identifier(alias))
        return SQL("%s.commercial_partner_id = ANY(%s)", SQL.identifier(alias), changed)

    def _get_refunds_query(self, changed=None):
        """Posted credit notes (untaxed, negative) per customer, up to the reference day."""
        return SQL(
            """
            SELECT m.commercial_partner_id, sum(m.amount_untaxed_signed)::float8
              FROM account_move m
             WHERE m.company_id = %(company)s AND m.move_type = 'out_refund'
               AND m.state = 'posted' AND m.invoice_date <= %(ref_day)s AND %(scope)s
          GROUP BY m.commercial_partner_id
            """,
            company=self.company_id.id,
            ref_day=self._reference_day(),
            scope=self._customer_scope("m", changed),
        )

    def _get_engagement_query(self, changed=None):
        """Per customer, over the year up to the end of the reference day: interactions
        in the last 90 days, share of inbound ones, share of campaign touches answered."""
        return SQL(
            """
            SELECT i.commercial_partner_id,
                   count(*) FILTER (WHERE i.date >= %(end)s - interval '90 days')::int4,
                   avg((i.direction = 'inbound')::int)::float8,
                   LEAST(COALESCE(
                       count(*) FILTER (WHERE i.direction = 'outbound'
                                        AND i.outcome IN ('opened', 'clicked', 'replied'))
                       ::float8 / NULLIF(count(*) FILTER (
                           WHERE i.direction = 'outbound' AND i.campaign_id IS NOT NULL), 0),
                       0), 1)::float8
              FROM ecrm_interaction i
             WHERE i.company_id = %(company)s
               AND i.date >= %(end)s - interval '365 days' AND i.date < %(end)s
               AND i.outcome IS DISTINCT FROM 'skipped' AND %(scope)s
          GROUP BY i.commercial_partner_id
            """,
            company=self.company_id.id,
            end=self._reference_end(),
            scope=self._customer_scope("i", changed),
        )

    def _fit(self, customers, alongside=None):
        """Fit the quintile bounds of recency, frequency and monetary value within the
        company (the highest value scoring 1..4, ties in one quintile: see
        ``quintile_bounds``), then BG/NBD and Gamma-Gamma on the company's summary.

        ``alongside``: a function run in another thread while the models are fitted,
        when the fit leaves the cursor alone (statements of the run); its result is
        returned.
        """
        from ..tools import clv  # noqa: PLC0415 - scipy is only needed by the scoring

        # The company's last fit is a close start: nightly refits converge in a few steps.
        previous = self.search(
            [
                ("company_id", "=", self.company_id.id),
                ("run_type", "=", "full"),
                ("state", "=", "done"),
                ("model_fitted", "=", True),
            ],
            order="id desc",
            limit=1,
        )
        sample = self._fit_sample(customers["partner_id"])
        fitted = {
            name: customers[name][sample]
            for name in ("x", "t_x", "age", "order_total", "first_value")
        }
        values = {"model_fitted": False, "fit_customers": len(fitted["x"])}
        gg_start = self._warm_start(previous, ("gg_p", "gg_q", "gg_v"))
        bgnbd_start = self._warm_start(previous, ("bgnbd_r", "bgnbd_alpha", "bgnbd_a", "bgnbd_b"))
        # The two models are independent: fitted side by side (their likelihoods are
        # numpy and scipy special functions over whole arrays, which release the GIL),
        # each as soon as its data is ready, while the quintile bounds are computed.
        # Nothing below uses the cursor until the models are written: ``alongside``
        # runs meanwhile.
        with ThreadPoolExecutor(max_workers=3, thread_name_prefix="ecrm_score_fit") as fitter:
            beside = fitter.submit(alongside) if alongside else None
            # Gamma-Gamma on the repeat buyers' mean value of their repeat orders, x
            # their number ([GG]; lifetimes, CLVTools, PyMC-Marketing alike): a first
            # order often differs (a welcome offer, a starter kit), and mixing it in
            # biased p and v (see repeat_spend).
            x, spend = repeat_spend(fitted)
            buyers = (x > 0) & (spend > 0)
            fitting_gg = fitter.submit(
                clv.fit_gamma_gamma, x[buyers].astype(np.float64), spend[buyers], initial=gg_start
            )
            # BG/NBD on the distinct (x, t_x, age) of customers older than a day, with
            # counts (integer days).
            older = fitted["age"] > 0
            summary, weights = distinct_rows(
                fitted["x"][older], fitted["t_x"][older], fitted["age"][older]
            )
            fitting_bgnbd = fitter.submit(
                clv.fit_bgnbd,
                summary[:, 0],
                summary[:, 1],
                summary[:, 2],
                weights=weights.astype(np.float64),
                initial=bgnbd_start,
            )
            bounds = {
                "r": quintile_bounds(-customers["recency_days"]),
                "f": quintile_bounds(customers["frequency"]),
                "m": quintile_bounds(customers["order_total"] + customers["refund"]),
            }
        result = beside.result() if beside else None
        self.bounds = bounds
        try:
            bgnbd = fitting_bgnbd.result()
            gg = fitting_gg.result()
            if not gg.get("mean_defined", True):
                raise ValueError(self.env._("the order values have no finite mean (q <= 1)"))
        except ValueError as error:
            values["message"] = self.env._("The value models were not fitted: %s", error)
            _logger.info("ecrm: %s: %s", self.name, error)
        else:
            values.update(
                model_fitted=True,
                bgnbd_r=bgnbd["r"],
                bgnbd_alpha=bgnbd["alpha"],
                bgnbd_a=bgnbd["a"],
                bgnbd_b=bgnbd["b"],
                bgnbd_log_likelihood=bgnbd["log_likelihood"],
                gg_p=gg["p"],
                gg_q=gg["q"],
                gg_v=gg["v"],
                gg_log_likelihood=gg["log_likelihood"],
            )
        self.write(values)
        return result

    @staticmethod
    def _warm_start(previous, names):
        """The ``previous`` run's estimates as the start of a fit (None: no previous
        run). Versions before 18.0.1.6.0 stored them with 6 decimals: an estimate at its
        lower bound reads back as 0, which is no valid start, hence the floor."""
        return tuple(max(previous[name], 1e-6) for name in names) if previous else None

    def _fit_sample(self, partners):
        """The customers the models are fitted on (a slice or index array of
        ``partners``): all of them, or the ``ecrm_addon.score_fit_customers`` ones whose
        ids hash lowest (a multiplicative hash, unrelated to what they bought), so that
        each night fits on the same customers and the estimates move with the data only.

        Fitting on a sample is the usual way with these models on large customer
        bases: the estimates' sampling error falls as one over the square root of the
        sample size (about 0.3 to 1.6 % at 250,000 customers, from the 0.7 to 3.6 % at
        50,000 measured in test_ecrm_clv_model). On 1,000,000 generated customers,
        fitting on 250,000 moved P(active) by 0.0025 at most and the expected purchases
        in a year by 0.3 % (median).
        """
        params = self.env["ir.config_parameter"].sudo()  # sudo: scoring settings
        try:
            limit = int(params.get_param("ecrm_addon.score_fit_customers", FIT_CUSTOMERS))
        except ValueError:
            _logger.warning(
                "ecrm: ecrm_addon.score_fit_customers is not a number: %s used", FIT_CUSTOMERS
            )
            limit = FIT_CUSTOMERS
        if limit <= 0 or len(partners) <= limit:
            return slice(None)
        hashed = (partners.astype(np.uint64) * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)
        return np.sort(np.argpartition(hashed, limit - 1)[:limit])

    def _copy_model_from(self, base):
        self.write({name: base[name] for name in MODEL_FIELDS})

    @staticmethod
    def _create_result_table(cr, table, columns, temporary=False):
        """Create the work table ``table`` (an SQL name) of ``columns``: unlogged, or
        with ``temporary`` a table of this transaction, dropped when it ends (cheaper
        to create: no file synced to disk, nothing logged)."""
        definition = SQL(
            "%s (partner_id int4 NOT NULL, %s)",
            table,
            SQL(", ").join(
                SQL("%s %s", SQL.identifier(name), SQL(pg_type)) for name, pg_type in columns
            ),
        )
        if temporary:
            cr.execute(SQL("CREATE TEMPORARY TABLE %s ON COMMIT DROP", definition))
            return
        cr.execute(
            SQL(
                # Autovacuum would take a table this new and large for its own and make
                # dropping it wait (deadlock_timeout, then the worker is cancelled).
                "CREATE UNLOGGED TABLE %s WITH ("
                "autovacuum_enabled = false, toast.autovacuum_enabled = false)",
                definition,
            )
        )

    def _result_columns(self):
        """The result table's columns: a backtest's also holds the purchases expected
        over its period."""
        return [*RESULT_COLUMNS, *((BACKTEST_COLUMN,) if self.run_type == "backtest" else ())]

    def _result_writer(self):
        scale = self._currency_scale()
        copy_types = {"numeric": ("numeric", scale), "varchar": ("text", 1)}
        return CopyIn(
            self._work_table(RESULT, as_name=True),
            [
                ("partner_id", "int4"),
                *(
                    (name, ("text", 3) if name == "rfm_code" else copy_types.get(pg_type, pg_type))
                    for name, pg_type in self._result_columns()
                ),
            ],
            nulls={
                **dict.fromkeys(NULL_WHEN_ZERO, 0),
                **dict.fromkeys(NULL_WHEN_NAN, "nan"),
            },
        )

    def _scorer(self, settings):
        """The function scoring a batch of customers: pure numpy (no ORM, no query), it
        returns the arrays of the result table's columns in the score table's types
        (amounts rounded to the currency)."""
        options = {
            "bounds": self.bounds,
            # sudo: the run's configuration, whoever started it
            "segment_map": self.env["ecrm.rfm.segment"].sudo()._get_segment_map(),
            "weights": settings["weights"],
            "tiers": self.env["ecrm.loyalty.tier"].sudo()._get_company_tiers(self.company_id),
            "model": self._get_model_params(),
            "horizon_days": settings["horizon"],
            "discount_rate": settings["discount"],
            "backtest_days": self.backtest_days if self.run_type == "backtest" else 0,
        }
        scale = self._currency_scale()
        columns = [name for name, _type in self._result_columns()]
        return functools.partial(self._score_batch, options=options, scale=scale, columns=columns)

    @staticmethod
    def _score_batch(customers, options, scale, columns):
        r, f, m, segment, loyalty, tier, p_alive, e30, e90, e365, e_backtest, value, clv = (
            score_batch(customers, **options)
        )
        order_total, refund = customers["order_total"], customers["refund"]
        codes = RFM_CODES[(r - 1) * 25 + (f - 1) * 5 + (m - 1)]
        r, f, m = DIGITS[r], DIGITS[f], DIGITS[m]
        values = {
            "first_order_date": customers["first_day"],
            "last_order_date": customers["last_day"],
            "recency_days": customers["recency_days"],
            "frequency": customers["frequency"],
            "repeat_purchases": customers["x"],
            "monetary_total": numeric_units(order_total + refund, scale),
            "monetary_avg": numeric_units(
                order_total / np.maximum(customers["frequency"], 1), scale
            ),
            "first_order_value": customers["first_value"],
            "refund_total": numeric_units(-refund, scale),
            "r_score": r,
            "f_score": f,
            "m_score": m,
            "rfm_code": codes,
            "segment_id": segment,
            "interaction_count_recent": customers["interactions_90d"],
            "inbound_share": customers["inbound_share"],
            "campaign_response_rate": customers["response_rate"],
            "loyalty_score": loyalty,
            "tier_id": tier,
            "p_alive": p_alive,
            "churn_risk": 1.0 - p_alive,
            "expected_purchases_30": e30,
            "expected_purchases_90": e90,
            "expected_purchases_365": e365,
            "expected_order_value": numeric_units(value, scale),
            "clv": numeric_units(clv, scale),
            "expected_purchases_backtest": e_backtest,
        }
        return [customers["partner_id"], *(values[name] for name in columns)]

    def _get_model_params(self):
        if not self.model_fitted:
            return None
        return {
            "bgnbd": {
                "r": self.bgnbd_r,
                "alpha": self.bgnbd_alpha,
                "a": self.bgnbd_a,
                "b": self.bgnbd_b,
            },
            "gg": {"p": self.gg_p, "q": self.gg_q, "v": self.gg_v},
        }

    def _step_publish(self):
        if self._publishes_while_scoring():
            # Left at this step by an earlier version of the module: score it again.
            self.step = "aggregate"
            return 0
        if self.customers_scored and not self._result_is_whole():
            # The result table is unlogged: after a crash of the database server it is
            # empty (or gone), and publishing it would delete every score. Start over.
            _logger.warning("ecrm: %s: the scored customers were lost, scoring again", self.name)
            self.step = "aggregate"
            return 0
        if self.run_type == "backtest":
            self._publish_backtest()
        else:
            self._publish_history(self._work_table(RESULT))  # as of a past date: history only
        self._drop_work_tables()
        self.write({"state": "done", "step": False, "finished_at": fields.Datetime.now()})
        return self.customers_scored

    def _result_is_whole(self):
        self.env.cr.execute(
            SQL("SELECT to_regclass(%s) IS NOT NULL", self._work_table(RESULT, as_name=True))
        )
        if not self.env.cr.fetchone()[0]:
            return False
        self.env.cr.execute(SQL("SELECT EXISTS (SELECT FROM %s)", self._work_table(RESULT)))
        return self.env.cr.fetchone()[0]

    def _prepare_publishing(self, stack, pipelined):
        """What ``_score_and_publish`` needs before its first batch, as statements only
        (run while the models are fitted, see ``_fit``): ``(writer, existing)``.

        ``writer``: with ``pipelined`` (several batches), the second connection writing
        the batch tables, cleared of a killed attempt's tables, its transaction holding
        the first batch's new table, and closed by ``stack`` (an ``ExitStack``); else
        None. ``existing``: for a full run, the number of the company's scores before
        it updates them (which leaves their pages not all-visible: after the last run's
        autovacuum, counting reads the index alone), to know whether some customers
        lost theirs; else 0.
        """
        writer_cr = None
        if pipelined:
            try:
                writer_cr = sql_db.db_connect(self.env.cr.dbname).cursor()
            except (PoolError, psycopg2.OperationalError) as error:
                # (the run's id: its name is computed, reading the database)
                _logger.warning(
                    "ecrm: score run %s: no second connection (%s), batches published in turn",
                    self.id,
                    error,
                )
            else:
                stack.callback(writer_cr.close)
                # The batch tables are work in progress, lost with the run in a crash:
                # their commits need not wait for the log to reach the disk, which holds
                # the updates published meanwhile (tens of MB of it per batch). For this
                # connection's session: the pool resets it when it lends it again.
                writer_cr.execute(SQL("SET synchronous_commit = off"))
                # A killed attempt's tables, committed: dropped by the connection that
                # sees them (this transaction's snapshot may be older than they are).
                self._drop_work_tables(writer_cr)
                writer_cr.commit()
                # The first batch's table, created in the transaction that will fill it
                # (see _score_and_publish_batches), while nothing waits for it.
                self._create_result_table(
                    writer_cr, SQL.identifier(self._batch_table(0)), self._result_columns()
                )
        existing = self._count_scores(self.company_id.id) if self.run_type == "full" else 0
        return writer_cr, existing

    def _score_and_publish(self, customers, scorer, batch_size, prepared, prefetch=None):
        """Score the customers batch after batch and write them into
        ``ecrm.customer.score``, in this transaction: users see the new scores when it
        commits, all at once, and a killed run leaves nothing behind but work tables.

        With several batches, three things run side by side (numpy, COPY and the
        statements release the GIL): this thread scores batch k+1; a second connection
        writes batch k into a work table of its own (binary COPY with FREEZE in the
        transaction creating the table: once committed, its rows are visible to this
        older transaction too); and this transaction's cursor, in a third thread,
        publishes batch k-1 (see ``_publish_batch``). A full run then deletes the scores
        of customers without counted orders any more.

        ``prepared``: what ``_prepare_publishing`` returned. ``prefetch``: the ids of
        customers whose scores are read ahead (the incremental runs' customers
        aggregated again; the others' were read by ``_get_additions``).
        """
        cr = self.env.cr
        self.env["ecrm.customer.score"].flush_model()
        self._set_local(work_mem="256MB")
        if prefetch:
            # The rescored customers' scores are spread over the table: their pages are
            # read ahead in table order (bitmap scan, _prefetch_pages; a column is read
            # so that all-visible pages are read too) before the updates look for them
            # one by one.
            with self._without_index_scans():
                cr.execute(
                    SQL(
                        """SELECT max(scored_at) FROM ecrm_customer_score
                            WHERE company_id = %s AND partner_id = ANY(%s)""",
                        self.company_id.id,
                        int_array(prefetch),
                    )
                )
        # Everything the publishing thread needs from the ORM, read here: it only runs
        # statements.
        columns = self._published_columns()
        writer = self._result_writer()
        count = len(customers["partner_id"])
        # Several batches: they start small and double, as nothing overlaps the first
        # batch's scoring and writing (0.4 s of 50,000 customers at 1,000,000), and each
        # next batch is written while the previous one is published, which takes about
        # as long per customer.
        first = min(MIN_BATCH_SIZE, batch_size) if count > batch_size else None
        batches = list(self._batches(customers, batch_size, first))
        tables = [self._batch_table(number) for number in range(len(batches))]
        writer_cr, existing = prepared
        # Written by the second connection, or else tables of this transaction.
        names = [
            SQL.identifier(table) if writer_cr else SQL.identifier("pg_temp", table)
            for table in tables
        ]
        if writer_cr:
            published = self._score_and_publish_batches(batches, scorer, tables, columns, writer_cr)
        else:
            # One batch (incremental runs, small companies): nothing to overlap, the run's
            # cursor writes and publishes it.
            published = 0
            for name, batch in zip(names, batches, strict=True):
                self._create_result_table(cr, name, self._result_columns(), temporary=True)
                writer.append(cr, scorer(batch), table=name)
                published += self._publish_batch(name, batch["partner_id"], columns)
        if existing > published:
            # Customers without counted orders any more lose their score.
            vanished = SQL("TRUE")
            if tables:
                scored = SQL(" UNION ALL ").join(
                    SQL("SELECT partner_id FROM %s", name) for name in names
                )
                vanished = SQL(
                    "NOT EXISTS (SELECT FROM (%s) f WHERE f.partner_id = c.partner_id)", scored
                )
            cr.execute(
                SQL(
                    "DELETE FROM ecrm_customer_score c WHERE c.company_id = %s AND %s",
                    self.company_id.id,
                    vanished,
                )
            )
        if writer_cr:
            # By name: created after this transaction's snapshot, they are not in the
            # pg_class it reads.
            cr.execute(SQL("DROP TABLE IF EXISTS %s", SQL(", ").join(names)))
        self.env["ecrm.customer.score"].invalidate_model()

    def _score_and_publish_batches(self, batches, scorer, tables, columns, writer_cr):
        """The pipeline of ``_score_and_publish``, the batches written through
        ``writer_cr`` (closed at the end): return the number of scores written."""
        writer = self._result_writer()
        result_columns = self._result_columns()
        read_ahead = self._scores_outgrow_buffers()
        with (
            writer_cr,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="ecrm_score_copy") as copier,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="ecrm_score_publish") as publisher,
        ):

            def write(number, scored):
                # Each batch's table is created by the transaction that fills it (rows
                # written frozen, see _score_and_publish) before its scores are ready:
                # the first one by _prepare_publishing, the next one below. Creating an
                # unlogged table waits for a file to reach the disk.
                writer.append(writer_cr, scored, table=tables[number], freeze=True)
                writer_cr.commit()
                if read_ahead:
                    # The batch's scores, read into PostgreSQL's buffers by this
                    # connection (making room there, writing changed pages out) while the
                    # previous batch is published: the update then finds them in memory.
                    partners = scored[0]
                    writer_cr.execute(
                        SQL(
                            """SELECT max(scored_at) FROM ecrm_customer_score
                                WHERE company_id = %s AND partner_id BETWEEN %s AND %s""",
                            self.company_id.id,
                            int(partners[0]),
                            int(partners[-1]),
                        )
                    )
                    writer_cr.commit()
                if number + 1 < len(tables):
                    self._create_result_table(
                        writer_cr, SQL.identifier(tables[number + 1]), result_columns
                    )

            def publish(writing, table, partners):
                writing.result()
                return self._publish_batch(SQL.identifier(table), partners, columns)

            writing, publishing = None, []
            for number, (table, batch) in enumerate(zip(tables, batches, strict=True)):
                scored = scorer(batch)
                if writing:
                    writing.result()  # one batch's columns in memory at a time
                writing = copier.submit(write, number, scored)
                publishing.append(publisher.submit(publish, writing, table, batch["partner_id"]))
            return sum(future.result() for future in publishing)

    def _scores_outgrow_buffers(self):
        """Whether the score table is larger than half of PostgreSQL's shared buffers:
        then a full run's batches of scores are read into them ahead of their update.
        Smaller, the table stays there between the runs and reading it again only
        costs time (0.05 s at 100,000 customers)."""
        self.env.cr.execute(
            SQL(
                """SELECT pg_relation_size('ecrm_customer_score')
                          > pg_size_bytes(current_setting('shared_buffers')) / 2"""
            )
        )
        return self.env.cr.fetchone()[0]

    def _published_columns(self):
        """The score table's columns a run writes, with their SQL values: (inserted,
        updated). The values read a work table aliased ``f``, the updated row is ``c``."""
        published = [name for name, _type in RESULT_COLUMNS]
        # The batches hold NULL for no segment and no prediction (see _result_writer).
        values = [
            # When the run started: it counts what was dated until then (its reference
            # day is today).
            ("scored_at", SQL("%s", self.started_at)),
            *((name, SQL.identifier("f", name)) for name in published),
        ]
        # Requests of rescoring made since the run aggregated stay for the next one.
        updates = [
            *values,
            (
                "rescore_requested_at",
                SQL(
                    "CASE WHEN c.rescore_requested_at > %s THEN c.rescore_requested_at END",
                    self.started_at,
                ),
            ),
        ]
        inserted = [("company_id", SQL("%s", self.company_id.id)), *values]
        return {"company": self.company_id.id, "inserted": inserted, "updated": updates}

    def _publish_batch(self, batch, partners, columns):
        """Write one batch table of scored customers (``partners``: their ids, in order)
        into ``ecrm.customer.score``, with ``columns`` from ``_published_columns``; return
        the number of scores written. Runs statements only (no ORM): see
        ``_score_and_publish``.

        An UPDATE of the existing rows rather than an INSERT ... ON CONFLICT DO UPDATE:
        the latter locks each conflicting row first (one more WAL record per row), and
        the update, touching no indexed column, stays heap-only (see the table's
        fillfactor). The batch holds the score table's columns in its types: the update
        copies them as they are, and reads the scores of the batch's range of customers
        only. Then the batch's new customers are inserted.
        """
        cr = self.env.cr
        cr.execute(
            SQL(
                """
                UPDATE ecrm_customer_score c SET (%(columns)s) = (%(expressions)s)
                  FROM %(batch)s f
                 WHERE c.partner_id = f.partner_id AND c.company_id = %(company)s
                   AND c.partner_id BETWEEN %(first)s AND %(last)s
                """,
                columns=SQL(", ").join(SQL.identifier(name) for name, _ in columns["updated"]),
                expressions=SQL(", ").join(value for _name, value in columns["updated"]),
                batch=batch,
                company=columns["company"],
                first=int(partners[0]),
                last=int(partners[-1]),
            )
        )
        written = cr.rowcount
        if written < len(partners):  # some customers have no score yet
            cr.execute(
                SQL(
                    """
                    INSERT INTO ecrm_customer_score (partner_id, %(columns)s)
                    SELECT f.partner_id, %(expressions)s
                      FROM %(batch)s f
                     WHERE NOT EXISTS (SELECT FROM ecrm_customer_score c
                                        WHERE c.partner_id = f.partner_id
                                          AND c.company_id = %(company)s)
                  ORDER BY f.partner_id
                    """,
                    columns=SQL(", ").join(SQL.identifier(name) for name, _ in columns["inserted"]),
                    expressions=SQL(", ").join(value for _name, value in columns["inserted"]),
                    company=columns["company"],
                    batch=batch,
                )
            )
            written += cr.rowcount
        return written

    def _count_scores(self, company_id):
        """The number of scores of company ``company_id``: statements only (see
        ``_prepare_publishing``)."""
        self.env.cr.execute(
            SQL("SELECT count(*) FROM ecrm_customer_score WHERE company_id = %s", company_id)
        )
        return self.env.cr.fetchone()[0]

    def _history_exists(self):
        """Whether the company's history has a snapshot of the reference date's month.

        Ordered as the unique index (company, period, customer) so that it is read: a
        period holds all of a company's customers, so the planner would rather read the
        table until the first match, which for this month is after every older month
        (1.1 s with four months of 1,000,000 customers).
        """
        self.env["ecrm.customer.score.history"].flush_model(["company_id", "period"])
        self.env.cr.execute(
            SQL(
                """SELECT 1 FROM ecrm_customer_score_history
                    WHERE company_id = %s AND period = %s ORDER BY partner_id LIMIT 1""",
                self.company_id.id,
                self._reference_day().replace(day=1),
            )
        )
        return bool(self.env.cr.fetchone())

    def _publish_history(self, result):
        """The period's snapshot of the scored customers in work table ``result``."""
        self._insert_history(
            SQL(
                """SELECT f.partner_id, f.r_score, f.f_score, f.m_score, %s, %s,
                          f.loyalty_score, %s, %s, f.monetary_total
                     FROM %s f""",
                self._published("segment_id"),
                self._published("tier_id"),
                self._published("churn_risk"),
                self._published("clv"),
                result,
            )
        )
        self.env["ecrm.customer.score.history"].invalidate_model()

    def _step_snapshot(self):
        """Copy the next SNAPSHOT_BATCH customers' published scores (the ones this run
        just wrote: the next run waits for this one) into the period's history."""
        cr = self.env.cr
        company, after = self.company_id.id, self.snapshot_partner_watermark
        cr.execute(
            SQL(
                """SELECT partner_id FROM ecrm_customer_score
                    WHERE company_id = %s AND partner_id > %s
                 ORDER BY partner_id OFFSET %s LIMIT 1""",
                company,
                after,
                SNAPSHOT_BATCH - 1,
            )
        )
        row = cr.fetchone()
        last = row[0] if row else None
        self._insert_history(
            SQL(
                """SELECT c.partner_id, c.r_score, c.f_score, c.m_score, c.segment_id,
                          c.tier_id, c.loyalty_score, c.churn_risk, c.clv, c.monetary_total
                     FROM ecrm_customer_score c
                    WHERE c.company_id = %s AND c.partner_id > %s AND %s""",
                company,
                after,
                SQL("c.partner_id <= %s", last) if last else SQL("TRUE"),
            )
        )
        copied = cr.rowcount
        self.env["ecrm.customer.score.history"].invalidate_model()
        if last:
            self.snapshot_partner_watermark = last
        else:
            self.write({"state": "done", "step": False, "finished_at": fields.Datetime.now()})
        return copied

    def _insert_history(self, rows):
        """Insert (or, run again, update) the period's snapshot of ``rows``: a query of
        partner_id, r_score, f_score, m_score, segment_id, tier_id, loyalty_score,
        churn_risk, clv and monetary_total as published."""
        self.env.cr.execute(
            SQL(
                """
                INSERT INTO ecrm_customer_score_history AS h (
                    period, partner_id, company_id, run_id, r_score, f_score, m_score,
                    segment_id, tier_id, loyalty_score, churn_risk, clv, monetary_total)
                SELECT %(period)s, r.partner_id, %(company)s, %(run)s, r.r_score, r.f_score,
                       r.m_score, r.segment_id, r.tier_id, r.loyalty_score, r.churn_risk,
                       r.clv, r.monetary_total
                  FROM (%(rows)s) AS r (partner_id, r_score, f_score, m_score, segment_id,
                       tier_id, loyalty_score, churn_risk, clv, monetary_total)
                ON CONFLICT (partner_id, company_id, period) DO UPDATE SET
                    run_id = EXCLUDED.run_id, r_score = EXCLUDED.r_score,
                    f_score = EXCLUDED.f_score, m_score = EXCLUDED.m_score,
                    segment_id = EXCLUDED.segment_id, tier_id = EXCLUDED.tier_id,
                    loyalty_score = EXCLUDED.loyalty_score, churn_risk = EXCLUDED.churn_risk,
                    clv = EXCLUDED.clv, monetary_total = EXCLUDED.monetary_total
                """,
                period=self._reference_day().replace(day=1),
                company=self.company_id.id,
                run=self.id,
                rows=rows,
            )
        )

    def _publish_backtest(self):
        """Predicted against actual purchases after the reference day, by past buyers:
        the orders of the ``backtest_days`` next days (whole days in the company's time
        zone), which have passed (see ``_backtest_not_over``)."""
        cr = self.env.cr
        start = self._reference_end()
        end = self._day_end(self.reference_date + timedelta(days=self.backtest_days))
        cr.execute(
            SQL(
                """
                WITH actual AS (
                    SELECT p.commercial_partner_id AS partner_id,
                           count(*) AS purchases
                      FROM sale_order o JOIN res_partner p ON p.id = o.partner_id
                     WHERE o.company_id = %(company)s AND o.state IN %(states)s
                       AND o.date_order >= %(start)s AND o.date_order < %(end)s
                  GROUP BY p.commercial_partner_id
                )
                SELECT LEAST(f.repeat_purchases, 7) AS bucket, count(*),
                       sum(COALESCE(NULLIF(f.expected_purchases_backtest, 'NaN'), 0)),
                       sum(COALESCE(a.purchases, 0))
                  FROM %(result)s f
             LEFT JOIN actual a ON a.partner_id = f.partner_id
              GROUP BY LEAST(f.repeat_purchases, 7)
              ORDER BY 1
                """,
                company=self.company_id.id,
                states=self._settings()["states"],
                start=start,
                end=end,
                result=self._work_table(RESULT),
            )
        )
        lines = [
            {
                "run_id": self.id,
                "repeat_purchases": bucket,
                "label": f"{bucket}+" if bucket == 7 else str(bucket),
                "customers": customers,
                "predicted": predicted,
                "actual": actual,
            }
            for bucket, customers, predicted, actual in cr.fetchall()
        ]
        self.backtest_line_ids.unlink()
        self.env["ecrm.backtest.line"].create(lines)
        predicted = sum(line["predicted"] for line in lines)
        actual = sum(line["actual"] for line in lines)
        self.write(
            {
                "backtest_predicted": predicted,
                "backtest_actual": actual,
                "backtest_error": 100 * (predicted - actual) / actual if actual else 0.0,
            }
        )
