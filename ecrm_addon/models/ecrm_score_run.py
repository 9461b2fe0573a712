import logging
import math
import re
import time
from datetime import timedelta

import numpy as np
import pytz

from odoo import api, fields, models
from odoo.exceptions import UserError
from odoo.tools import SQL

from ..tools.pgcopy import copy_in, copy_out_float8
from .ecrm_score_math import quintile_bounds, score_batch

_logger = logging.getLogger(__name__)

# Each run works in two unlogged tables of its own, named after it and dropped when the
# run ends: created by CREATE TABLE AS, they are written without per-row index upkeep,
# read back page by page, and dropped instead of deleted row by row.
STAGE = "ecrm_score_stage_"
PREDICTION = "ecrm_score_prediction_"
WORK_TABLES = (STAGE, PREDICTION)
WORK_MEM = re.compile(r"\d+\s*(kB|MB|GB)")
RUN_TYPES = [
    ("full", "Full"),
    ("incremental", "Incremental"),
    ("backtest", "Backtest"),
]
STEPS = [("aggregate", "Aggregate"), ("predict", "Predict"), ("publish", "Publish")]
# Columns of the stage table the predict step writes, in the order of score_batch's output.
PREDICTED = [
    "r_score",
    "f_score",
    "m_score",
    "segment_id",
    "loyalty",
    "tier_id",
    "p_alive",
    "e30",
    "e90",
    "e365",
    "e_backtest",
    "exp_value",
    "clv",
]
INTEGERS = {"r_score", "f_score", "m_score", "segment_id", "tier_id"}


class EcrmScoreRun(models.Model):
    """One scoring run of one company, executed step by step by the scheduler.

    aggregate: one CREATE TABLE AS aggregates every customer's orders, credit notes and
        interactions into the run's unlogged stage table; full runs then fit the
        quintile bounds and the BG/NBD and Gamma-Gamma models on the company's summary.
    predict: batches of stage rows, page by page, get their scores and predictions
        (numpy, vectorised, read and written with binary COPY) in the run's unlogged
        prediction table.
    publish: one transaction writes the stage and its predictions into
        ``ecrm.customer.score`` (update, insert of new customers, delete of vanished ones)
        and the monthly history, and drops the work tables; until then users see the
        previous run's scores.

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
    reference_date = fields.Datetime(
        required=True,
        default=fields.Datetime.now,
        help="Only what was known at this date is used. A date in the past scores customers "
        "as they were then: the run fills the score history instead of the current scores.",
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
    progress_block = fields.Integer(
        readonly=True, help="The predict step's next page of the stage table."
    )
    interaction_watermark = fields.Integer(
        readonly=True, help="The last interaction logged when the run started aggregating."
    )
    message = fields.Text(readonly=True)
    bounds = fields.Json(readonly=True, help="Quintile bounds of recency, frequency, monetary.")
    bgnbd_r = fields.Float("BG/NBD r", digits=(16, 6), readonly=True)
    bgnbd_alpha = fields.Float("BG/NBD alpha", digits=(16, 6), readonly=True)
    bgnbd_a = fields.Float("BG/NBD a", digits=(16, 6), readonly=True)
    bgnbd_b = fields.Float("BG/NBD b", digits=(16, 6), readonly=True)
    bgnbd_log_likelihood = fields.Float("BG/NBD log-likelihood", readonly=True)
    gg_p = fields.Float("Gamma-Gamma p", digits=(16, 6), readonly=True)
    gg_q = fields.Float("Gamma-Gamma q", digits=(16, 6), readonly=True)
    gg_v = fields.Float("Gamma-Gamma v", digits=(16, 6), readonly=True)
    gg_log_likelihood = fields.Float("Gamma-Gamma log-likelihood", readonly=True)
    model_fitted = fields.Boolean(readonly=True)
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

    def _drop_work_tables(self):
        for run in self:
            self.env.cr.execute(
                SQL(
                    "DROP TABLE IF EXISTS %s",
                    SQL(", ").join(run._work_table(prefix) for prefix in WORK_TABLES),
                )
            )

    @api.model
    def _gc_work_tables(self, keep_pending=True):
        """Drop the work tables of runs that are over or gone (a run killed for good);
        with ``keep_pending=False`` (uninstall), every run's."""
        self.env.cr.execute(
            SQL(
                "SELECT relname FROM pg_class WHERE relkind = 'r' AND relname ~ %s",
                f"^({'|'.join(WORK_TABLES)})[0-9]+$",
            )
        )
        run_ids = {int(name.rsplit("_", 1)[1]) for (name,) in self.env.cr.fetchall()}
        # sudo: a technical clean-up of every company's runs, whatever the cron user sees
        runs = self.sudo().browse(run_ids)
        if keep_pending:
            runs -= runs.exists().filtered(lambda run: run.state in ("queued", "running"))
        runs._drop_work_tables()

    def _staged_sql(self):
        """The run's stage rows with their predictions, as a subquery."""
        return SQL(
            """(SELECT %(run)s AS run_id, st.partner_id, %(company)s AS company_id,
                       st.frequency, st.x, st.first_day, st.last_day, st.recency_days,
                       st.order_total, st.refund, st.interactions_90d, st.inbound_share,
                       st.response_rate, r.r_score, r.f_score, r.m_score, r.segment_id,
                       r.loyalty, r.tier_id, NULLIF(r.p_alive, 'NaN') AS p_alive,
                       NULLIF(r.e30, 'NaN') AS e30, NULLIF(r.e90, 'NaN') AS e90,
                       NULLIF(r.e365, 'NaN') AS e365, NULLIF(r.e_backtest, 'NaN') AS e_backtest,
                       NULLIF(r.exp_value, 'NaN') AS exp_value, NULLIF(r.clv, 'NaN') AS clv
                  FROM %(stage)s st
                  JOIN %(prediction)s r ON r.partner_id = st.partner_id)""",
            run=self.id,
            company=self.company_id.id,
            stage=self._work_table(STAGE),
            prediction=self._work_table(PREDICTION),
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

    @api.model
    def action_recompute_now(self):
        """Queue a full run for each of the user's current companies and wake the cron."""
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
    def _cron_ecrm_score(self, run_type="full", batch_size=50000):
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
        if run_type == "incremental" and not self._get_base_run(company):
            run_type = "full"  # nothing to be incremental from
        return self.create(
            {
                "company_id": company.id,
                "run_type": run_type,
                "reference_date": reference_date or fields.Datetime.now(),
            }
        )

    def _get_base_run(self, company):
        return self.search(
            [
                ("company_id", "=", company.id),
                ("run_type", "=", "full"),
                ("state", "=", "done"),
                ("reference_date", "<=", fields.Datetime.now()),
            ],
            order="reference_date desc, id desc",
            limit=1,
        )

    def _execute_all(self, batch_size=50000):
        self.ensure_one()
        while self.state in ("queued", "running"):
            self._execute_step(batch_size=batch_size)

    def _execute_step(self, batch_size=50000):
        """Run the next step; return the number of customers it handled."""
        self.ensure_one()
        if self.state == "queued":
            self.write(
                {"state": "running", "step": "aggregate", "started_at": fields.Datetime.now()}
            )
        start = time.perf_counter()
        if self.step == "aggregate":
            count = self._step_aggregate()
        elif self.step == "predict":
            count = self._step_predict(batch_size)
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
        """The reference date as a day in the company's time zone."""
        tz = pytz.timezone(self._company_tz())
        return pytz.utc.localize(self.reference_date).astimezone(tz).date()

    def _company_tz(self):
        return self.company_id.partner_id.tz or "UTC"

    def _get_changed_partner_ids(self, previous):
        """Customers to rescore since the ``previous`` run started, found through indexes:
        orders created or confirmed since (confirming sets the order date), credit notes
        written since, interactions logged since (ids above the previous run's
        watermark) and customers whose rescoring was requested (cancelled orders).

        Other edits of older orders (an amount changed after confirmation) and later
        changes to older interactions wait for the next full run.
        """
        since = previous.started_at
        self.env.cr.execute(
            SQL(
                """
                SELECT p.commercial_partner_id
                  FROM sale_order o JOIN res_partner p ON p.id = o.partner_id
                 WHERE o.company_id = %(company)s AND o.state IN %(states)s
                   AND (o.create_date >= %(since)s OR o.date_order >= %(since)s)
                 UNION
                SELECT m.commercial_partner_id
                  FROM account_move m
                 WHERE m.company_id = %(company)s AND m.move_type = 'out_refund'
                   AND m.write_date >= %(since)s
                 UNION
                SELECT i.commercial_partner_id
                  FROM ecrm_interaction i
                 WHERE i.id > %(watermark)s AND i.company_id = %(company)s
                 UNION
                SELECT c.partner_id
                  FROM ecrm_customer_score c
                 WHERE c.company_id = %(company)s AND c.rescore_requested_at IS NOT NULL
                """,
                company=self.company_id.id,
                states=self._settings()["states"],
                since=since,
                watermark=previous.interaction_watermark,
            )
        )
        return [row[0] for row in self.env.cr.fetchall() if row[0]]

    def _step_aggregate(self):
        settings = self._settings()
        # Everything below reads with SQL: flush, captures pending in this transaction too.
        self.env.flush_all()
        self.env["ecrm.interaction"].flush_model()
        changed = None
        if self.run_type == "incremental":
            base = self._get_base_run(self.company_id)
            previous = self.search(
                [
                    ("company_id", "=", self.company_id.id),
                    ("state", "=", "done"),
                    ("run_type", "in", ("full", "incremental")),
                ],
                order="started_at desc, id desc",
                limit=1,
            )
            self.base_run_id = base
            changed = self._get_changed_partner_ids(previous or base)
        self.env.cr.execute(SQL("SELECT COALESCE(max(id), 0) FROM ecrm_interaction"))
        self.interaction_watermark = self.env.cr.fetchone()[0]
        self.env.flush_all()  # the run's own fields
        cr = self.env.cr
        # Memory to aggregate a company's orders without spilling to disk; JIT compiling
        # costs more than it saves here.
        cr.execute(SQL("SELECT set_config('work_mem', %s, true)", self._work_mem()))
        cr.execute(SQL("SET LOCAL jit = off"))
        if changed is None:
            # All of the company's orders are read: the planner likes to read them in
            # partner order through the partner_id index, i.e. one random heap access per
            # order, much slower than the sequential scan.
            cr.execute(SQL("SET LOCAL enable_indexscan = off"))
        self._drop_work_tables()
        stage = self._work_table(STAGE)
        cr.execute(self._get_aggregate_query(settings["states"], changed))
        staged = cr.rowcount
        cr.execute(SQL("RESET enable_indexscan"))
        # Fresh statistics: the planner joins the work tables at publication, and the
        # predict step sizes its batches of pages with them.
        cr.execute(SQL("ANALYZE %s", stage))
        cr.execute(
            SQL(
                """CREATE UNLOGGED TABLE %s (
                       partner_id integer NOT NULL,
                       r_score integer, f_score integer, m_score integer, segment_id integer,
                       loyalty float8, tier_id integer,
                       p_alive float8, e30 float8, e90 float8, e365 float8, e_backtest float8,
                       exp_value float8, clv float8)""",
                self._work_table(PREDICTION),
            )
        )
        if self.run_type == "incremental":
            self._copy_model_from(self.base_run_id)
        else:
            self._fit()
        self.write({"step": "predict", "progress_block": 0, "customers_scored": staged})
        return staged

    def _work_mem(self):
        """Memory of the aggregation's hash tables (system parameter
        ``ecrm_addon.score_work_mem``)."""
        params = self.env["ir.config_parameter"].sudo()  # sudo: scoring settings
        value = (params.get_param("ecrm_addon.score_work_mem") or "1GB").strip()
        if not WORK_MEM.fullmatch(value):
            _logger.warning("ecrm: ecrm_addon.score_work_mem %r is not like 1GB: 256MB used", value)
            value = "256MB"
        return value

    def _get_aggregate_query(self, states, changed=None):
        """CREATE TABLE AS of the run's stage: one row per customer (commercial entity).

        ``changed``: the customers an incremental run rescores (None: every customer).
        Repeat purchases (BG/NBD's x) are repeat orders: ``frequency - 1``. Counting
        distinct days instead sorted every order of the company (PostgreSQL 15 has no
        presorted DISTINCT aggregates): 2.5 times the bare RFM query at 10,000,000
        orders, for the few customers who order twice a day.

        The rows are written in customer order: the predictions follow that order, and
        so do the score rows (inserted in that order, then updated in place), so that
        publishing updates the score table page after page instead of jumping between
        pages (then each page is read and written once).
        """
        ref_day = self._reference_day()
        tz = self._company_tz()

        def scope(alias):
            if changed is None:
                return SQL("TRUE")
            return SQL("%s.commercial_partner_id = ANY(%s)", SQL.identifier(alias), changed)

        order_scope = SQL("TRUE")
        if changed is not None:
            order_scope = SQL(
                """o.partner_id IN (SELECT id FROM res_partner
                                     WHERE commercial_partner_id = ANY(%s))""",
                changed,
            )

        def local_day(value):
            return SQL("(%s AT TIME ZONE 'UTC' AT TIME ZONE %s)::date", value, tz)

        return SQL(
            """
            CREATE UNLOGGED TABLE %(stage)s AS
            WITH per_partner AS (
                -- Grouped by ordering partner first: one hash aggregate over the orders,
                -- as cheap as the bare RFM query, then rolled up to the customer.
                SELECT o.partner_id, count(*) AS frequency, min(o.date_order) AS first_order,
                       max(o.date_order) AS last_order,
                       -- (orders in the company's currency have a rate of 1: no division)
                       sum(CASE WHEN o.currency_rate = 1 THEN o.amount_untaxed
                                ELSE o.amount_untaxed / COALESCE(NULLIF(o.currency_rate, 0), 1)
                           END) AS order_total
                  FROM sale_order o
                 WHERE o.company_id = %(company)s AND o.state IN %(states)s
                   AND o.date_order <= %(ref)s AND %(order_scope)s
              GROUP BY o.partner_id
            ), customers AS (
                SELECT p.commercial_partner_id AS partner_id, sum(pp.frequency) AS frequency,
                       -- local days follow the UTC times' order
                       %(first_day)s AS first_day, %(last_day)s AS last_day,
                       sum(pp.order_total) AS order_total
                  FROM per_partner pp
                  JOIN res_partner p ON p.id = pp.partner_id
              GROUP BY p.commercial_partner_id
            ), refunds AS (
                SELECT m.commercial_partner_id AS partner_id,
                       sum(m.amount_untaxed_signed) AS refund
                  FROM account_move m
                 WHERE m.company_id = %(company)s AND m.move_type = 'out_refund'
                   AND m.state = 'posted' AND m.invoice_date <= %(ref_day)s AND %(refund_scope)s
              GROUP BY m.commercial_partner_id
            ), engagement AS (
                SELECT i.commercial_partner_id AS partner_id,
                       count(*) FILTER (WHERE i.date > %(ref)s - interval '90 days') AS recent,
                       avg((i.direction = 'inbound')::int) AS inbound_share,
                       COALESCE(
                           count(*) FILTER (WHERE i.direction = 'outbound'
                                            AND i.outcome IN ('opened', 'clicked', 'replied'))
                           ::float8 / NULLIF(count(*) FILTER (
                               WHERE i.direction = 'outbound' AND i.campaign_id IS NOT NULL), 0),
                           0) AS response_rate
                  FROM ecrm_interaction i
                 WHERE i.company_id = %(company)s
                   AND i.date > %(ref)s - interval '365 days' AND i.date <= %(ref)s
                   AND i.outcome IS DISTINCT FROM 'skipped' AND %(interaction_scope)s
              GROUP BY i.commercial_partner_id
            )
            SELECT c.partner_id, c.frequency::int AS frequency, c.frequency::int - 1 AS x,
                   c.last_day - c.first_day AS t_x, %(ref_day)s - c.first_day AS age,
                   %(ref_day)s - c.last_day AS recency_days, c.first_day, c.last_day,
                   c.order_total, COALESCE(r.refund, 0) AS refund,
                   COALESCE(e.recent, 0)::int AS interactions_90d,
                   COALESCE(e.inbound_share, 0)::float8 AS inbound_share,
                   LEAST(COALESCE(e.response_rate, 0), 1)::float8 AS response_rate
              FROM customers c
         LEFT JOIN refunds r ON r.partner_id = c.partner_id
         LEFT JOIN engagement e ON e.partner_id = c.partner_id
          ORDER BY c.partner_id
            """,
            stage=self._work_table(STAGE),
            first_day=local_day(SQL("min(pp.first_order)")),
            last_day=local_day(SQL("max(pp.last_order)")),
            company=self.company_id.id,
            states=states,
            ref=self.reference_date,
            ref_day=ref_day,
            order_scope=order_scope,
            refund_scope=scope("m"),
            interaction_scope=scope("i"),
        )

    def _fit(self):
        """Fit the quintile bounds of recency, frequency and monetary value within the
        company (the highest value scoring 1..4, ties in one quintile: see
        ``quintile_bounds``), then BG/NBD and Gamma-Gamma on the company's summary."""
        from ..tools import clv  # noqa: PLC0415 - scipy is only needed by the scoring

        # One read of the stage (8 float8 per customer: 64 MB per million customers).
        values = copy_out_float8(
            self.env.cr,
            SQL(
                """SELECT -recency_days::float8, frequency::float8,
                          (order_total + refund)::float8, x::float8, t_x::float8, age::float8,
                          (order_total / frequency)::float8, (order_total > 0)::int::float8
                     FROM %s""",
                self._work_table(STAGE),
            ),
            8,
        )
        self.bounds = {key: quintile_bounds(values[:, index]) for index, key in enumerate("rfm")}
        # BG/NBD on the distinct (x, t_x, age) of customers older than a day, with counts.
        summary, weights = np.unique(values[values[:, 5] > 0][:, 3:6], axis=0, return_counts=True)
        spend = values[(values[:, 3] > 0) & (values[:, 7] > 0)][:, [3, 6]]
        del values
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
        values = {"model_fitted": False}
        try:
            bgnbd = clv.fit_bgnbd(
                summary[:, 0],
                summary[:, 1],
                summary[:, 2],
                weights=weights.astype(np.float64),
                initial=(previous.bgnbd_r, previous.bgnbd_alpha, previous.bgnbd_a, previous.bgnbd_b)
                if previous
                else None,
            )
            gg = clv.fit_gamma_gamma(
                spend[:, 0],
                spend[:, 1],
                initial=(previous.gg_p, previous.gg_q, previous.gg_v) if previous else None,
            )
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

    def _copy_model_from(self, base):
        self.write(
            {
                "bounds": base.bounds,
                "model_fitted": base.model_fitted,
                **{
                    name: base[name]
                    for name in (
                        "bgnbd_r",
                        "bgnbd_alpha",
                        "bgnbd_a",
                        "bgnbd_b",
                        "bgnbd_log_likelihood",
                        "gg_p",
                        "gg_q",
                        "gg_v",
                        "gg_log_likelihood",
                    )
                },
            }
        )

    def _step_predict(self, batch_size):
        """Score the next ``batch_size`` customers or so: the stage is read in chunks of
        pages (a TID range scan: no index, no sort, each page read once)."""
        cr = self.env.cr
        stage = self._work_table(STAGE)
        cr.execute(
            SQL(
                """SELECT relpages, reltuples FROM pg_class
                    WHERE oid = %s::regclass""",
                self._work_table(STAGE, as_name=True),
            )
        )
        pages, tuples = cr.fetchone()
        start = self.progress_block
        if start >= pages or tuples <= 0:
            self.step = "publish"
            return 0
        end = start + max(1, math.ceil(batch_size * pages / tuples))
        rows = copy_out_float8(
            cr,
            SQL(
                """
                SELECT partner_id::float8, frequency::float8, x::float8, t_x::float8,
                       age::float8, order_total::float8, refund::float8,
                       interactions_90d::float8, inbound_share, response_rate,
                       recency_days::float8
                  FROM %s
                 WHERE ctid >= %s::tid AND (ctid < %s::tid OR %s)
                """,
                stage,
                f"({start},0)",
                f"({end},0)",
                end >= pages,  # the last batch reads to the end
            ),
            11,
        )
        self.progress_block = end
        if not len(rows):
            return 0
        settings = self._settings()
        tiers = self.env["ecrm.loyalty.tier"].sudo()._get_company_tiers(self.company_id)
        model = self._get_model_params()
        results = score_batch(
            rows,
            bounds=self.bounds,
            segment_map=self.env["ecrm.rfm.segment"].sudo()._get_segment_map(),
            weights=settings["weights"],
            tiers=tiers,
            model=model,
            horizon_days=settings["horizon"],
            discount_rate=settings["discount"],
            backtest_days=self.backtest_days if self.run_type == "backtest" else 0,
        )
        partner_ids = rows[:, 0].astype(np.int32)
        copy_in(
            self.env.cr,
            self._work_table(PREDICTION, as_name=True),
            [
                ("partner_id", "int4", partner_ids),
                *(
                    (name, "int4" if name in INTEGERS else "float8", values)
                    for name, values in zip(PREDICTED, results, strict=True)
                ),
            ],
        )
        return len(rows)

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
        if self.run_type == "backtest":
            self._publish_backtest()
        elif self.reference_date < fields.Datetime.now() - timedelta(days=1):
            self._publish_history()  # as of a past date: history only
        else:
            self._publish_scores()
            if not self._history_exists():
                self._publish_history()  # the period's first run is its snapshot
        self._drop_work_tables()
        self.write({"state": "done", "step": False, "finished_at": fields.Datetime.now()})
        return self.customers_scored

    def _publish_scores(self):
        """Write the staged scores into ``ecrm.customer.score`` in three statements.

        An UPDATE of the existing rows rather than an INSERT ... ON CONFLICT DO UPDATE:
        the latter locks each conflicting row first (one more WAL record per row), and
        the update, touching no indexed column, stays heap-only (see the table's
        fillfactor). Then the new customers are inserted, and a full run deletes the
        scores of customers without counted orders any more.
        """
        self.env["ecrm.customer.score"].flush_model()
        cr = self.env.cr
        cr.execute(SQL("SET LOCAL work_mem = '256MB'"))
        cr.execute(SQL("ANALYZE %s", self._work_table(PREDICTION)))
        staged = self._staged_sql()
        values = [
            ("scored_at", SQL("%s", self.reference_date)),
            ("first_order_date", SQL("s.first_day")),
            ("last_order_date", SQL("s.last_day")),
            ("recency_days", SQL("s.recency_days")),
            ("frequency", SQL("s.frequency")),
            ("repeat_purchases", SQL("s.x")),
            ("monetary_total", SQL("s.order_total + s.refund")),
            ("monetary_avg", SQL("s.order_total / s.frequency")),
            ("refund_total", SQL("-s.refund")),
            ("r_score", SQL("s.r_score::varchar")),
            ("f_score", SQL("s.f_score::varchar")),
            ("m_score", SQL("s.m_score::varchar")),
            ("rfm_code", SQL("s.r_score::varchar || s.f_score::varchar || s.m_score::varchar")),
            ("segment_id", SQL("NULLIF(s.segment_id, 0)")),
            ("interaction_count_recent", SQL("s.interactions_90d")),
            ("inbound_share", SQL("s.inbound_share")),
            ("campaign_response_rate", SQL("s.response_rate")),
            ("loyalty_score", SQL("s.loyalty")),
            ("tier_id", SQL("NULLIF(s.tier_id, 0)")),
            ("p_alive", SQL("s.p_alive")),
            ("churn_risk", SQL("1 - s.p_alive")),
            ("expected_purchases_30", SQL("s.e30")),
            ("expected_purchases_90", SQL("s.e90")),
            ("expected_purchases_365", SQL("s.e365")),
            ("expected_order_value", SQL("s.exp_value")),
            ("clv", SQL("s.clv")),
            ("write_uid", SQL("%s", self.env.uid)),
            ("write_date", SQL("now() AT TIME ZONE 'UTC'")),
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
        cr.execute(
            SQL(
                """
                UPDATE ecrm_customer_score c SET (%(columns)s) = (%(expressions)s)
                  FROM %(staged)s s
                 WHERE c.partner_id = s.partner_id AND c.company_id = s.company_id
                """,
                columns=SQL(", ").join(SQL.identifier(name) for name, _value in updates),
                expressions=SQL(", ").join(value for _name, value in updates),
                staged=staged,
            )
        )
        columns = SQL(", ").join(SQL.identifier(name) for name, _value in values)
        expressions = SQL(", ").join(value for _name, value in values)
        if cr.rowcount < self.customers_scored:  # some customers have no score yet
            cr.execute(
                SQL(
                    """
                    INSERT INTO ecrm_customer_score (
                        partner_id, company_id, create_uid, create_date, %(columns)s)
                    SELECT s.partner_id, s.company_id, %(uid)s, now() AT TIME ZONE 'UTC',
                           %(expressions)s
                      FROM %(staged)s s
                     WHERE NOT EXISTS (SELECT FROM ecrm_customer_score c
                                        WHERE c.partner_id = s.partner_id
                                          AND c.company_id = s.company_id)
                  ORDER BY s.partner_id
                    """,
                    columns=columns,
                    expressions=expressions,
                    uid=self.env.uid,
                    staged=staged,
                )
            )
        if self.run_type == "full" and self._count_scores() > self.customers_scored:
            # Customers without counted orders any more lose their score.
            cr.execute(
                SQL(
                    """DELETE FROM ecrm_customer_score c
                        WHERE c.company_id = %s
                          AND NOT EXISTS (SELECT FROM %s st WHERE st.partner_id = c.partner_id)
                    """,
                    self.company_id.id,
                    self._work_table(STAGE),
                )
            )
        self.env["ecrm.customer.score"].invalidate_model()

    def _count_scores(self):
        self.env.cr.execute(
            SQL(
                "SELECT count(*) FROM ecrm_customer_score WHERE company_id = %s", self.company_id.id
            )
        )
        return self.env.cr.fetchone()[0]

    def _history_exists(self):
        period = self._reference_day().replace(day=1)
        return bool(
            self.env["ecrm.customer.score.history"].search_count(
                [("company_id", "=", self.company_id.id), ("period", "=", period)], limit=1
            )
        )

    def _publish_history(self):
        period = self._reference_day().replace(day=1)
        self.env.cr.execute(
            SQL(
                """
                INSERT INTO ecrm_customer_score_history AS h (
                    period, partner_id, company_id, run_id, r_score, f_score, m_score,
                    segment_id, tier_id, loyalty_score, churn_risk, clv, monetary_total,
                    create_uid, create_date, write_uid, write_date)
                SELECT %(period)s, s.partner_id, s.company_id, s.run_id, s.r_score::varchar,
                       s.f_score::varchar, s.m_score::varchar, NULLIF(s.segment_id, 0),
                       NULLIF(s.tier_id, 0), s.loyalty, 1 - s.p_alive, s.clv,
                       s.order_total + s.refund,
                       %(uid)s, now() at time zone 'UTC', %(uid)s, now() at time zone 'UTC'
                  FROM %(staged)s s
                ON CONFLICT (partner_id, company_id, period) DO UPDATE SET
                    run_id = EXCLUDED.run_id, r_score = EXCLUDED.r_score,
                    f_score = EXCLUDED.f_score, m_score = EXCLUDED.m_score,
                    segment_id = EXCLUDED.segment_id, tier_id = EXCLUDED.tier_id,
                    loyalty_score = EXCLUDED.loyalty_score, churn_risk = EXCLUDED.churn_risk,
                    clv = EXCLUDED.clv, monetary_total = EXCLUDED.monetary_total,
                    write_date = EXCLUDED.write_date
                """,
                period=period,
                uid=self.env.uid,
                run=self.id,
                staged=self._staged_sql(),
            )
        )
        self.env["ecrm.customer.score.history"].invalidate_model()

    def _publish_backtest(self):
        """Predicted against actual purchases after the reference date, by past buyers."""
        cr = self.env.cr
        end = self.reference_date + timedelta(days=self.backtest_days)
        cr.execute(
            SQL(
                """
                WITH actual AS (
                    SELECT p.commercial_partner_id AS partner_id,
                           count(*) AS purchases
                      FROM sale_order o JOIN res_partner p ON p.id = o.partner_id
                     WHERE o.company_id = %(company)s AND o.state IN %(states)s
                       AND o.date_order > %(ref)s AND o.date_order <= %(end)s
                  GROUP BY p.commercial_partner_id
                )
                SELECT LEAST(s.x, 7) AS bucket, count(*), sum(COALESCE(s.e_backtest, 0)),
                       sum(COALESCE(a.purchases, 0))
                  FROM %(staged)s s
             LEFT JOIN actual a ON a.partner_id = s.partner_id
              GROUP BY LEAST(s.x, 7)
              ORDER BY 1
                """,
                company=self.company_id.id,
                states=self._settings()["states"],
                ref=self.reference_date,
                end=end,
                run=self.id,
                staged=self._staged_sql(),
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
