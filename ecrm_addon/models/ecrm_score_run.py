import logging
import time
from datetime import timedelta

import numpy as np
import pytz

from odoo import api, fields, models, tools
from odoo.exceptions import UserError
from odoo.tools import SQL

from ..tools.pgcopy import copy_in, copy_out_float8
from .ecrm_score_math import quintile_bounds, score_batch

_logger = logging.getLogger(__name__)

PREDICTION_TABLE = "ecrm_score_prediction"
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


class EcrmScoreRun(models.Model):
    """One scoring run of one company, executed step by step by the scheduler.

    aggregate: one SQL statement aggregates every customer's orders, credit notes and
        interactions into an unlogged stage table; full runs then fit the quintile
        bounds and the BG/NBD and Gamma-Gamma models on the company's summary.
    predict: batches of stage rows get their scores and predictions (numpy, vectorised,
        read and written with binary COPY) in an unlogged prediction table.
    publish: one transaction writes the stage and its predictions into
        ``ecrm.customer.score`` (update, insert of new customers, delete of vanished ones)
        and the monthly history; until then users see the previous run's scores.

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
    progress_partner_id = fields.Integer(readonly=True)
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

    def init(self):
        self.env.cr.execute(
            SQL(
                """
                CREATE UNLOGGED TABLE IF NOT EXISTS ecrm_score_stage (
                    run_id integer NOT NULL,
                    partner_id integer NOT NULL,
                    company_id integer NOT NULL,
                    frequency integer NOT NULL,
                    x integer NOT NULL,
                    t_x integer NOT NULL,
                    age integer NOT NULL,
                    recency_days integer NOT NULL,
                    first_day date,
                    last_day date,
                    order_total numeric NOT NULL,
                    refund numeric NOT NULL DEFAULT 0,
                    interactions_90d integer NOT NULL DEFAULT 0,
                    inbound_share float8 NOT NULL DEFAULT 0,
                    response_rate float8 NOT NULL DEFAULT 0,
                    PRIMARY KEY (run_id, partner_id)
                )
                """
            )
        )
        # Predictions are appended here batch by batch with a binary COPY (an INSERT is
        # much cheaper than updating the stage rows), and joined to the stage when the run
        # is published. Every column is float8 so that numpy writes the rows as they are;
        # NaN stands for a prediction that could not be made.
        self.env.cr.execute(
            SQL(
                """
                CREATE UNLOGGED TABLE IF NOT EXISTS ecrm_score_prediction (
                    run_id integer NOT NULL,
                    partner_id integer NOT NULL,
                    r_score float8, f_score float8, m_score float8,
                    segment_id float8, loyalty float8, tier_id float8,
                    p_alive float8, e30 float8, e90 float8, e365 float8, e_backtest float8,
                    exp_value float8, clv float8
                )
                """
            )
        )
        tools.create_index(
            self.env.cr,
            "ecrm_score_prediction_run_idx",
            "ecrm_score_prediction",
            ["run_id", "partner_id"],
        )
        return super().init()

    def _staged_sql(self):
        """The run's stage rows with their predictions, as a subquery."""
        return SQL(
            """(SELECT st.run_id, st.partner_id, st.company_id, st.frequency, st.x,
                       st.first_day, st.last_day, st.recency_days, st.order_total, st.refund,
                       st.interactions_90d, st.inbound_share, st.response_rate,
                       r.r_score::int AS r_score, r.f_score::int AS f_score,
                       r.m_score::int AS m_score, r.segment_id::int AS segment_id, r.loyalty,
                       r.tier_id::int AS tier_id, NULLIF(r.p_alive, 'NaN') AS p_alive,
                       NULLIF(r.e30, 'NaN') AS e30, NULLIF(r.e90, 'NaN') AS e90,
                       NULLIF(r.e365, 'NaN') AS e365, NULLIF(r.e_backtest, 'NaN') AS e_backtest,
                       NULLIF(r.exp_value, 'NaN') AS exp_value, NULLIF(r.clv, 'NaN') AS clv
                  FROM ecrm_score_stage st
                  JOIN ecrm_score_prediction r
                    ON r.run_id = st.run_id AND r.partner_id = st.partner_id
                 WHERE st.run_id = %s)""",
            self.id,
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

    def _get_changed_partner_ids(self, since):
        """Customers with orders, credit notes or interactions written since ``since``."""
        self.env.flush_all()
        self.env.cr.execute(
            SQL(
                """
                SELECT p.commercial_partner_id
                  FROM sale_order o JOIN res_partner p ON p.id = o.partner_id
                 WHERE o.company_id = %(company)s AND o.write_date >= %(since)s
                 UNION
                SELECT m.commercial_partner_id
                  FROM account_move m
                 WHERE m.company_id = %(company)s AND m.move_type = 'out_refund'
                   AND m.write_date >= %(since)s
                 UNION
                SELECT i.commercial_partner_id
                  FROM ecrm_interaction i
                 WHERE i.company_id = %(company)s AND i.write_date >= %(since)s
                """,
                company=self.company_id.id,
                since=since,
            )
        )
        return [row[0] for row in self.env.cr.fetchall() if row[0]]

    def _step_aggregate(self):
        settings = self._settings()
        partner_filter = SQL("TRUE")
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
            changed = self._get_changed_partner_ids(previous.started_at or base.started_at)
            partner_filter = SQL(
                """o.partner_id IN (SELECT id FROM res_partner
                                     WHERE commercial_partner_id = ANY(%s))""",
                changed,
            )
        self.env.flush_all()
        cr = self.env.cr
        # Memory to aggregate without spilling; JIT compiling costs more than it saves here.
        cr.execute(SQL("SET LOCAL work_mem = '256MB'"))
        cr.execute(SQL("SET LOCAL jit = off"))
        if self.run_type != "incremental":
            # All of the company's orders are read: the planner likes to read them in
            # partner order through the partner_id index (to count distinct days without
            # a sort), i.e. one random heap access per order: 3.4 s instead of 0.3 s for
            # the sequential scan and 1 s for the sort, at 1,000,000 orders.
            cr.execute(SQL("SET LOCAL enable_indexscan = off"))
        cr.execute(SQL("DELETE FROM ecrm_score_stage WHERE run_id = %s", self.id))
        cr.execute(SQL("DELETE FROM ecrm_score_prediction WHERE run_id = %s", self.id))
        cr.execute(self._get_aggregate_query(settings["states"], partner_filter))
        staged = cr.rowcount
        if self.run_type != "incremental":
            # The work tables' statistics are a run old, or of an empty table: without
            # fresh ones the planner takes a full run's rows for one and joins them by
            # nested loops. (Incremental runs are small: nested loops are right for them,
            # and analyzing costs more than they do.)
            cr.execute(SQL("ANALYZE ecrm_score_stage"))
        if self.run_type == "incremental":
            self._copy_model_from(self.base_run_id)
        else:
            self._fit_bounds()
            self._fit_models()
        self.write({"step": "predict", "progress_partner_id": 0, "customers_scored": staged})
        return staged

    def _get_aggregate_query(self, states, partner_filter):
        ref_day = self._reference_day()
        return SQL(
            """
            WITH per_partner AS (
                -- Aggregated per ordering partner first (no join on millions of orders)...
                -- (the day of the first and last order: local days follow UTC times' order)
                SELECT o.partner_id, count(*) AS frequency, count(DISTINCT %(day)s) AS days,
                       (min(o.date_order) AT TIME ZONE 'UTC' AT TIME ZONE %(tz)s)::date
                           AS first_day,
                       (max(o.date_order) AT TIME ZONE 'UTC' AT TIME ZONE %(tz)s)::date
                           AS last_day,
                       sum(o.amount_untaxed / COALESCE(NULLIF(o.currency_rate, 0), 1))
                           AS order_total
                  FROM sale_order o
                 WHERE %(counted)s
              GROUP BY o.partner_id
            ), rolled AS (
                -- ...then rolled up to the customer company.
                SELECT p.commercial_partner_id AS partner_id, sum(pp.frequency) AS frequency,
                       sum(pp.days) AS days, min(pp.first_day) AS first_day,
                       max(pp.last_day) AS last_day, sum(pp.order_total) AS order_total,
                       count(*) AS buyers
                  FROM per_partner pp
                  JOIN res_partner p ON p.id = pp.partner_id
              GROUP BY p.commercial_partner_id
            ), shared_days AS (
                -- Several contacts of one company may buy the same day: count it once. The
                -- orders are read again for these few companies only (the orders are not
                -- kept between the two: materializing a million rows costs more).
                SELECT p.commercial_partner_id AS partner_id, count(DISTINCT %(day)s) AS days
                  FROM sale_order o
                  JOIN res_partner p ON p.id = o.partner_id
                 WHERE %(counted)s
                   AND p.commercial_partner_id IN (SELECT partner_id FROM rolled WHERE buyers > 1)
              GROUP BY p.commercial_partner_id
            ), customers AS (
                SELECT r.partner_id, r.frequency, COALESCE(s.days, r.days) - 1 AS x,
                       r.first_day, r.last_day, r.order_total
                  FROM rolled r
             LEFT JOIN shared_days s ON s.partner_id = r.partner_id
            ), refunds AS (
                SELECT m.commercial_partner_id AS partner_id,
                       sum(m.amount_untaxed_signed) AS refund
                  FROM account_move m
                 WHERE m.company_id = %(company)s AND m.move_type = 'out_refund'
                   AND m.state = 'posted' AND m.invoice_date <= %(ref_day)s
                   AND m.commercial_partner_id IN (SELECT partner_id FROM customers)
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
                   AND i.outcome IS DISTINCT FROM 'skipped'
                   AND i.commercial_partner_id IN (SELECT partner_id FROM customers)
              GROUP BY i.commercial_partner_id
            )
            INSERT INTO ecrm_score_stage (
                run_id, partner_id, company_id, frequency, x, t_x, age, recency_days,
                first_day, last_day, order_total, refund, interactions_90d, inbound_share,
                response_rate)
            SELECT %(run)s, c.partner_id, %(company)s, c.frequency, c.x,
                   c.last_day - c.first_day, %(ref_day)s - c.first_day, %(ref_day)s - c.last_day,
                   c.first_day, c.last_day, c.order_total, COALESCE(r.refund, 0),
                   COALESCE(e.recent, 0), COALESCE(e.inbound_share, 0),
                   LEAST(COALESCE(e.response_rate, 0), 1)
              FROM customers c
         LEFT JOIN refunds r ON r.partner_id = c.partner_id
         LEFT JOIN engagement e ON e.partner_id = c.partner_id
            """,
            tz=self._company_tz(),
            day=SQL("(o.date_order AT TIME ZONE 'UTC' AT TIME ZONE %s)::date", self._company_tz()),
            counted=SQL(
                "o.company_id = %s AND o.state IN %s AND o.date_order <= %s AND %s",
                self.company_id.id,
                states,
                self.reference_date,
                partner_filter,
            ),
            company=self.company_id.id,
            ref=self.reference_date,
            ref_day=ref_day,
            run=self.id,
        )

    def _fit_bounds(self):
        """Quintile bounds of recency, frequency and monetary value within the company:
        the highest value scoring 1..4, ties in one quintile (see ``quintile_bounds``)."""
        values = copy_out_float8(
            self.env.cr,
            SQL(
                """SELECT -recency_days::float8, frequency::float8, (order_total + refund)::float8
                     FROM ecrm_score_stage WHERE run_id = %s""",
                self.id,
            ),
            3,
        )
        self.bounds = {key: quintile_bounds(values[:, index]) for index, key in enumerate("rfm")}

    def _fit_models(self):
        """Fit BG/NBD and Gamma-Gamma on the company's summary (identical rows grouped)."""
        from ..tools import clv  # noqa: PLC0415 - scipy is only needed by the scoring

        cr = self.env.cr
        summary = copy_out_float8(
            cr,
            SQL(
                """SELECT x::float8, t_x::float8, age::float8, count(*)::float8
                     FROM ecrm_score_stage
                    WHERE run_id = %s AND age > 0 GROUP BY x, t_x, age""",
                self.id,
            ),
            4,
        )
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
                weights=summary[:, 3],
                initial=(previous.bgnbd_r, previous.bgnbd_alpha, previous.bgnbd_a, previous.bgnbd_b)
                if previous
                else None,
            )
            spend = copy_out_float8(
                cr,
                SQL(
                    """SELECT x::float8, (order_total / frequency)::float8 FROM ecrm_score_stage
                        WHERE run_id = %s AND x > 0 AND order_total > 0""",
                    self.id,
                ),
                2,
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
        rows = copy_out_float8(
            self.env.cr,
            SQL(
                """
                SELECT partner_id::float8, frequency::float8, x::float8, t_x::float8,
                       age::float8, order_total::float8, refund::float8,
                       interactions_90d::float8, inbound_share, response_rate,
                       recency_days::float8
                  FROM ecrm_score_stage
                 WHERE run_id = %s AND partner_id > %s
              ORDER BY partner_id
                 LIMIT %s
                """,
                self.id,
                self.progress_partner_id,
                batch_size,
            ),
            11,
        )
        if not len(rows):
            self.step = "publish"
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
            PREDICTION_TABLE,
            [
                ("run_id", "int4", np.full(len(rows), self.id, dtype=np.int32)),
                ("partner_id", "int4", partner_ids),
                *(
                    (name, "float8", values)
                    for name, values in zip(PREDICTED, results, strict=True)
                ),
            ],
        )
        self.progress_partner_id = int(partner_ids[-1])
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
        self.env.cr.execute(SQL("DELETE FROM ecrm_score_stage WHERE run_id = %s", self.id))
        self.env.cr.execute(SQL("DELETE FROM ecrm_score_prediction WHERE run_id = %s", self.id))
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
        cr = self.env.cr
        cr.execute(SQL("SET LOCAL work_mem = '256MB'"))
        if self.run_type != "incremental":
            cr.execute(SQL("ANALYZE ecrm_score_prediction"))  # see _step_aggregate
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
        columns = SQL(", ").join(SQL.identifier(name) for name, _value in values)
        expressions = SQL(", ").join(value for _name, value in values)
        cr.execute(
            SQL(
                """
                UPDATE ecrm_customer_score c SET (%(columns)s) = (%(expressions)s)
                  FROM %(staged)s s
                 WHERE c.partner_id = s.partner_id AND c.company_id = s.company_id
                """,
                columns=columns,
                expressions=expressions,
                staged=staged,
            )
        )
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
                    """,
                    columns=columns,
                    expressions=expressions,
                    uid=self.env.uid,
                    staged=staged,
                )
            )
        if self.run_type == "full":
            # Customers without counted orders any more lose their score.
            cr.execute(
                SQL(
                    """DELETE FROM ecrm_customer_score c
                        WHERE c.company_id = %s
                          AND NOT EXISTS (SELECT FROM ecrm_score_stage st
                                           WHERE st.run_id = %s AND st.partner_id = c.partner_id)
                    """,
                    self.company_id.id,
                    self.id,
                )
            )
        self.env["ecrm.customer.score"].invalidate_model()

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
        """Predicted against actual purchase days after the reference date, by past buyers."""
        cr = self.env.cr
        end = self.reference_date + timedelta(days=self.backtest_days)
        cr.execute(
            SQL(
                """
                WITH actual AS (
                    SELECT p.commercial_partner_id AS partner_id,
                           count(DISTINCT (o.date_order AT TIME ZONE 'UTC'
                                           AT TIME ZONE %(tz)s)::date) AS purchases
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
                tz=self._company_tz(),
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
