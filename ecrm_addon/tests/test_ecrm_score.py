import importlib.util
from datetime import date, datetime, time, timedelta
from pathlib import Path
from unittest.mock import patch

import numpy as np
import pytz
from psycopg2.pool import PoolError

from odoo import Command, fields
from odoo.exceptions import AccessError, UserError, ValidationError
from odoo.tests import TransactionCase, tagged
from odoo.tools import SQL

from ..models.ecrm_score_math import (
    distinct_rows,
    local_days,
    quintile_bounds,
    quintile_scores,
)
from ..models.ecrm_score_run import RESULT_COLUMNS
from ..tools import clv
from ..tools.pgcopy import CopyIn, copy_out, date_to_days, int_array, numeric_units
from .common import EcrmCommon

BRUSSELS = pytz.timezone("Europe/Brussels")


class EcrmScoreCommon(EcrmCommon):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.Run = cls.env["ecrm.score.run"]
        cls.Score = cls.env["ecrm.customer.score"]
        # Hand-computed figures: order confirmations would add interactions (engagement).
        (cls.company_a | cls.company_b).write({"ecrm_capture_order": False})
        cls.company_a.partner_id.tz = "Europe/Brussels"
        cls.score_company = cls.company_a
        cls.now = fields.Datetime.now().replace(microsecond=0)
        cls.today = pytz.utc.localize(cls.now).astimezone(BRUSSELS).date()

    @classmethod
    def _at(cls, days_ago, hour_utc=10):
        """A naive UTC datetime, ``days_ago`` local days before today, at hour_utc UTC;
        today, no later than a minute before ``now`` (before 10:00 UTC, or after 22:00
        UTC when Brussels is already on the next day, 10:00 UTC today is to come)."""
        day = cls.today - timedelta(days=days_ago)
        return min(datetime.combine(day, time(hour_utc)), cls.now - timedelta(minutes=1))

    @classmethod
    def _order_on(cls, partner, when, price, company=None, **vals):
        order = cls._create_order(partner, company=company, price=price, **vals)
        order.date_order = when
        return order

    @classmethod
    def _refund_on(cls, partner, days_ago, price, company):
        """A draft credit note of ``price`` (untaxed) to ``partner``, ``days_ago`` days
        before today."""
        return cls.env["account.move"].create(
            {
                "move_type": "out_refund",
                "company_id": company.id,
                "partner_id": partner.id,
                "invoice_date": cls.today - timedelta(days=days_ago),
                "invoice_line_ids": [
                    Command.create(
                        {"name": "Refund", "quantity": 1, "price_unit": price, "tax_ids": []}
                    )
                ],
            }
        )

    def _run(self, company=None, run_type="full", batch_size=None, **vals):
        run = self.Run.create(
            {
                "company_id": (company or self.score_company).id,
                "run_type": run_type,
                "reference_date": self.today,
                **vals,
            }
        )
        run._execute_all(**({"batch_size": batch_size} if batch_size else {}))
        return run

    def _score(self, partner, company=None):
        return self.Score.search(
            [
                ("partner_id", "=", partner.id),
                ("company_id", "=", (company or self.score_company).id),
            ]
        )


@tagged("post_install", "-at_install", "ecrm")
class TestEcrmRfm(EcrmScoreCommon):
    """Hand-computed figures in a company of their own (demo companies have customers)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.company_r = cls.env["res.company"].create(
            {"name": "e-CRM RFM Company", "currency_id": cls.currency_a.id}
        )
        cls.company_r.write({"ecrm_capture_order": False})
        cls.company_r.partner_id.tz = "Europe/Brussels"
        cls.env["account.chart.template"].try_loading(
            "generic_coa", company=cls.company_r, install_demo=False
        )
        cls.env.user.company_ids += cls.company_r
        cls.user_salesman.company_ids += cls.company_r
        cls.score_company = cls.company_r
        cls.env["res.currency.rate"].create(
            {
                "name": "2020-01-01",
                "rate": 0.5,
                "currency_id": cls.currency_b.id,
                "company_id": cls.company_r.id,
            }
        )
        Partner = cls.env["res.partner"]
        cls.c1, cls.c2, cls.c3, cls.c4, cls.c5, cls.c6, cls.shared = Partner.create(
            [{"name": f"RFM customer {index}"} for index in range(1, 8)]
        )
        cls._order_on(cls.c1, cls._at(10), 100, company=cls.company_r)
        cls._order_on(cls.c1, cls._at(40), 200, company=cls.company_r)
        cls._order_on(cls.c1, cls._at(70), 300, company=cls.company_r)
        cls._order_on(cls.c2, cls._at(200), 50, company=cls.company_r)
        cls._order_on(cls.c3, cls._at(30), 120, company=cls.company_r)
        cls._order_on(
            cls.c3, cls._at(5), 500, company=cls.company_r
        )._action_cancel()  # never counts
        cls._create_order(
            cls.c3, company=cls.company_r, price=999, confirm=False
        )  # a quotation never counts
        # A customer buying in the other currency: 100 at 0.5 per company currency unit.
        pricelist_b = cls.env["product.pricelist"].create(
            {
                "name": "Other currency",
                "currency_id": cls.currency_b.id,
                "company_id": cls.company_r.id,
            }
        )
        cls._order_on(cls.c4, cls._at(20), 100, company=cls.company_r, pricelist_id=pricelist_b.id)
        cls._order_on(cls.c4, cls._at(100), 100, company=cls.company_r)
        # A posted credit note reduces the monetary value.
        cls._order_on(cls.c5, cls._at(15), 400, company=cls.company_r)
        refund = cls._refund_on(cls.c5, 3, 30, cls.company_r)
        refund.with_company(cls.company_r).action_post()
        # Two orders an hour apart around local midnight: two purchase days in Brussels.
        midnight = BRUSSELS.localize(datetime.combine(cls.today - timedelta(days=49), time(0)))
        midnight_utc = midnight.astimezone(pytz.utc).replace(tzinfo=None)
        cls._order_on(cls.c6, midnight_utc - timedelta(minutes=30), 100, company=cls.company_r)
        cls._order_on(cls.c6, midnight_utc + timedelta(minutes=30), 100, company=cls.company_r)
        # A customer shared by both companies has a score in each.
        cls._order_on(cls.shared, cls._at(25), 80, company=cls.company_r)
        cls._order_on(cls.shared, cls._at(25), 60, company=cls.company_b)
        cls._order_on(cls.customer_b, cls._at(3), 90, company=cls.company_b)

    def test_rfm_hand_computed(self):
        run = self._run()
        self.assertEqual(run.state, "done")
        self.assertEqual(run.customers_scored, 7)
        expected = {
            # partner: (recency, frequency, x, monetary, R, F, M, segment code)
            self.c1: (10, 3, 2, 600, "5", "5", "5", "champions"),
            self.c2: (200, 1, 0, 50, "1", "3", "1", "at_risk"),
            self.c3: (30, 1, 0, 120, "3", "3", "3", "need_attention"),
            self.c4: (20, 2, 1, 300, "4", "5", "4", "loyal"),
            self.c5: (15, 1, 0, 370, "5", "3", "5", "potential_loyalists"),
            self.c6: (49, 2, 1, 200, "2", "5", "3", "cannot_lose"),
            self.shared: (25, 1, 0, 80, "3", "3", "2", "need_attention"),
        }
        for partner, (recency, frequency, x, monetary, r, f, m, code) in expected.items():
            score = self._score(partner)
            self.assertEqual(len(score), 1, partner.name)
            self.assertEqual(
                (score.recency_days, score.frequency, score.repeat_purchases),
                (recency, frequency, x),
                partner.name,
            )
            self.assertAlmostEqual(score.monetary_total, monetary, places=2, msg=partner.name)
            self.assertEqual((score.r_score, score.f_score, score.m_score), (r, f, m), partner.name)
            self.assertEqual(score.rfm_code, r + f + m)
            self.assertEqual(score.segment_id.code, code, partner.name)
        self.assertAlmostEqual(self._score(self.c5).refund_total, 30, places=2)
        self.assertAlmostEqual(self._score(self.c4).monetary_avg, 150, places=2)
        self.assertEqual(self._score(self.c6).first_order_date, self.today - timedelta(days=50))
        # A score says when it was computed, a snapshot which run wrote it (no create and
        # write dates: see the models).
        self.assertEqual(self._score(self.c1).scored_at, run.started_at)
        self.assertNotIn("write_date", self.Score._fields)
        history = self.env["ecrm.customer.score.history"].search([("partner_id", "=", self.c1.id)])
        self.assertEqual(history.run_id.reference_date, self.today)

    def test_loyalty_and_tiers(self):
        self._run()
        # No engagement in this fixture: loyalty = 30% R + 25% F + 25% M on (score - 1) / 4.
        c1 = self._score(self.c1)
        self.assertAlmostEqual(c1.loyalty_score, 80.0, places=2)
        self.assertEqual(c1.tier_id, self.env.ref("ecrm_addon.ecrm_loyalty_tier_gold"))
        c2 = self._score(self.c2)
        self.assertAlmostEqual(c2.loyalty_score, 12.5, places=2)
        self.assertEqual(c2.tier_id, self.env.ref("ecrm_addon.ecrm_loyalty_tier_bronze"))
        # Company tiers replace the default ones.
        vip = self.env["ecrm.loyalty.tier"].create(
            [
                {"name": "Member", "min_score": 0, "company_id": self.company_r.id},
                {"name": "VIP", "min_score": 75, "company_id": self.company_r.id},
            ]
        )
        self._run()
        self.assertEqual(self._score(self.c1).tier_id, vip[1])
        self.assertEqual(self._score(self.c2).tier_id, vip[0])

    def test_companies_scored_apart(self):
        self._run()
        self._run(company=self.company_b)
        in_b = self._score(self.shared, self.company_b)
        self.assertEqual(in_b.frequency, 1)
        self.assertAlmostEqual(in_b.monetary_total, 60, places=2)
        self.assertEqual(in_b.currency_id, self.currency_b)
        self.assertAlmostEqual(self._score(self.shared).monetary_total, 80, places=2)
        self.assertEqual(self.Score.search_count([("company_id", "=", self.company_b.id)]), 2)
        # The customer form shows the current company's row.
        self.assertEqual(self.shared.with_company(self.company_b).ecrm_score_id, in_b)
        self.assertEqual(self.shared.with_company(self.company_r).ecrm_frequency, 1)

    def test_company_contacts_roll_up(self):
        """Orders of a company's contacts count for the company, each order a purchase."""
        company_x = self.env["res.company"].create({"name": "Roll-up Co"})
        company_x.partner_id.tz = "Europe/Brussels"  # the days of self.today
        company_x.ecrm_capture_order = False
        self.env.user.company_ids += company_x
        acme = self.env["res.partner"].create({"name": "Acme", "is_company": True})
        ann, bob = self.env["res.partner"].create(
            [{"name": "Ann", "parent_id": acme.id}, {"name": "Bob", "parent_id": acme.id}]
        )
        self._order_on(ann, self._at(10), 100, company=company_x)
        self._order_on(bob, self._at(10, hour_utc=11), 50, company=company_x)
        self._order_on(bob, self._at(30), 25, company=company_x)
        self._run(company=company_x)
        score = self._score(acme, company_x)
        # Two orders the same day are two purchases: x counts repeat orders.
        self.assertEqual((score.frequency, score.repeat_purchases), (3, 2))
        self.assertEqual(
            (score.recency_days, score.first_order_date), (10, self.today - timedelta(days=30))
        )
        self.assertAlmostEqual(score.monetary_total, 175, places=2)
        self.assertFalse(self._score(ann, company_x), "scores are the customer company's")

    def test_incremental_rolls_up_contacts(self):
        """An incremental run reads the orders of the changed companies' contacts, their
        contacts' too, but not those of a company under them (its own customer)."""
        company_x = self.env["res.company"].create({"name": "Roll-up Co"})
        company_x.partner_id.tz = "Europe/Brussels"  # the days of self.today
        company_x.ecrm_capture_order = False
        self.env.user.company_ids += company_x
        Partner = self.env["res.partner"]
        acme = Partner.create({"name": "Acme", "is_company": True})
        ann = Partner.create({"name": "Ann", "parent_id": acme.id})
        ann_assistant = Partner.create({"name": "Ann's assistant", "parent_id": ann.id})
        branch = Partner.create({"name": "Acme Branch", "is_company": True, "parent_id": acme.id})
        buyer = Partner.create({"name": "Branch buyer", "parent_id": branch.id})
        self.assertEqual(ann_assistant.commercial_partner_id, acme)
        self.assertEqual(buyer.commercial_partner_id, branch)
        self._order_on(ann_assistant, self._at(40), 100, company=company_x)
        self._order_on(buyer, self._at(40), 1000, company=company_x)
        first = self._run(company=company_x)
        # One transaction in tests: move what came before the first run back in time.
        first.started_at = self.now - timedelta(hours=1)
        self.env.flush_all()
        self.env.cr.execute(
            "UPDATE sale_order SET write_date = %s, create_date = %s WHERE company_id = %s",
            [self.now - timedelta(hours=2)] * 2 + [company_x.id],
        )
        self._order_on(ann, self._at(2), 50, company=company_x)
        run = self._run(company=company_x, run_type="incremental")
        self.assertEqual(run.customers_scored, 1)
        score = self._score(acme, company_x)
        self.assertEqual((score.frequency, score.recency_days), (2, 2))
        self.assertAlmostEqual(score.monetary_total, 150, places=2)
        self.assertEqual(self._score(branch, company_x).frequency, 1)

    def test_model_not_fitted_on_tiny_data(self):
        run = self._run()
        self.assertFalse(run.model_fitted)
        self.assertTrue(run.message)
        self.assertFalse(self._score(self.c1).p_alive)

    def test_access(self):
        self._run()
        self._run(company=self.company_b)
        salesman = self.user_salesman.with_context(
            allowed_company_ids=(self.company_a | self.company_r).ids
        )
        scores = self.Score.with_user(salesman).search([("partner_id", "=", self.shared.id)])
        self.assertEqual(scores.company_id, self.company_r, "not company B's score")
        with self.assertRaises(AccessError):
            scores[:1].write({"loyalty_score": 100})
        with self.assertRaises(AccessError):
            self.Run.with_user(self.user_salesman).search([])
        with self.assertRaises(UserError):
            self.Run.with_user(self.user_salesman).action_recompute_now()
        runs = self.Run.with_user(self.user_manager).search([])
        self.assertTrue(runs)

    def test_partner_filters(self):
        self._run()
        Partner = self.env["res.partner"].with_user(self.user_salesman).with_company(self.company_r)
        ids = (self.c1 | self.c2 | self.c3 | self.c4 | self.c5 | self.c6 | self.shared).ids
        champions = Partner.search([("ecrm_segment_id.code", "=", "champions"), ("id", "in", ids)])
        self.assertEqual(champions, self.c1)
        at_risk = Partner.search(
            [("ecrm_segment_id.code", "in", ("at_risk", "cannot_lose")), ("id", "in", ids)]
        )
        self.assertEqual(at_risk, self.c2 | self.c6)
        self.assertEqual(
            Partner.search([("ecrm_rfm_code", "=", "555"), ("id", "in", ids)]), self.c1
        )
        gold = Partner.search([("ecrm_tier_id.name", "=", "Gold"), ("id", "in", ids)])
        self.assertIn(self.c1, gold)

    def test_incremental_only_changed(self):
        first = self._run()
        # One transaction in tests: move what came before the first run back in time.
        first.started_at = self.now - timedelta(hours=1)
        self.env.flush_all()
        self._move_back(hours=2)
        self._order_on(self.c2, self._at(1), 75, company=self.company_r)
        self._score(self.c3).loyalty_score = -1  # a mark the run would overwrite
        run = self._run(run_type="incremental")
        self.assertEqual(run.customers_scored, 1)
        self.assertEqual(run.base_run_id.run_type, "full")
        score = self._score(self.c2)
        self.assertEqual((score.frequency, score.recency_days), (2, 1))
        self.assertEqual(self._score(self.c3).loyalty_score, -1, "c3 was not rewritten")

    def test_period_snapshot_is_a_full_run(self):
        """An incremental run holds the few customers it rescored: it is no snapshot of
        the period, the period's first full run is."""
        History = self.env["ecrm.customer.score.history"]
        this_period = [
            ("company_id", "=", self.company_r.id),
            ("period", "=", self.today.replace(day=1)),
        ]
        first = self._run()
        self.assertEqual(History.search_count(this_period), 7)
        History.search(this_period).unlink()  # as if the period began after the run
        first.started_at = self.now - timedelta(hours=1)
        self.env.flush_all()
        self._move_back(hours=2)
        self._order_on(self.c2, self._at(1), 75, company=self.company_r)
        self.assertEqual(self._run(run_type="incremental").customers_scored, 1)
        self.assertFalse(History.search_count(this_period))
        # The full run publishes the scores, then copies them in calls of its own (here
        # of 3 customers).
        run = self.Run.create({"company_id": self.company_r.id, "reference_date": self.today})
        run._execute_step()
        self.assertEqual((run.state, run.step), ("running", "snapshot"))
        self.assertEqual(self._score(self.c2).frequency, 2, "published")
        with patch("odoo.addons.ecrm_addon.models.ecrm_score_run.SNAPSHOT_BATCH", 3):
            copied = [run._execute_step() for _call in range(3)]
        self.assertEqual(copied, [3, 3, 1])
        self.assertEqual(run.state, "done")
        self.assertEqual(History.search_count(this_period), 7)
        self.assertEqual(
            History.search([*this_period, ("partner_id", "=", self.c2.id)]).monetary_total,
            self._score(self.c2).monetary_total,
        )

    def _move_back(self, hours):
        """Date the company's orders and credit notes back, as if written before the run."""
        self.env.flush_all()
        earlier = [self.now - timedelta(hours=hours)] * 2 + [self.company_r.id]
        self.env.cr.execute(
            "UPDATE sale_order SET write_date = %s, create_date = %s WHERE company_id = %s",
            earlier,
        )
        self.env.cr.execute(
            "UPDATE account_move SET write_date = %s, create_date = %s WHERE company_id = %s",
            earlier,
        )

    def test_incremental_sees_credit_notes(self):
        """Posting a credit note, or setting it back to draft, has the customer rescored
        by the next incremental run."""
        first = self._run()
        first.started_at = self.now - timedelta(hours=1)
        self._move_back(hours=2)
        self.assertAlmostEqual(self._score(self.c1).monetary_total, 600, places=2)
        refund = self._refund_on(self.c1, 1, 80, self.company_r)
        self.assertFalse(self._score(self.c1).rescore_requested_at, "a draft does not count")
        refund.with_company(self.company_r).action_post()
        self.assertTrue(self._score(self.c1).rescore_requested_at)
        run = self._run(run_type="incremental")
        self.assertEqual(run.customers_scored, 1)
        score = self._score(self.c1)
        self.assertAlmostEqual(score.monetary_total, 520, places=2)
        self.assertAlmostEqual(score.refund_total, 80, places=2)
        self.assertFalse(score.rescore_requested_at)
        refund.with_company(self.company_r).button_draft()
        self.assertTrue(score.rescore_requested_at)
        self._run(run_type="incremental")
        self.assertAlmostEqual(score.monetary_total, 600, places=2)

    def test_incremental_sees_cancellations(self):
        first = self._run()
        first.started_at = self.now - timedelta(hours=1)
        self._move_back(hours=2)
        self.assertEqual(self._score(self.c1).frequency, 3)
        oldest = self.c1.sale_order_ids.sorted("date_order")[0]
        oldest._action_cancel()
        self.assertTrue(self._score(self.c1).rescore_requested_at)
        run = self._run(run_type="incremental")
        self.assertEqual(run.customers_scored, 1)
        score = self._score(self.c1)
        self.assertEqual((score.frequency, score.monetary_total), (2, 300))
        self.assertFalse(score.rescore_requested_at, "the run took the request")
        # A request made while a run works (after it started) waits for the next run.
        second = self.Run.create({"company_id": self.company_r.id, "run_type": "incremental"})
        second.write(
            {
                "state": "running",
                "step": "aggregate",
                "started_at": self.now - timedelta(minutes=30),
            }
        )
        requested = self.now - timedelta(minutes=10)
        score.rescore_requested_at = requested
        second._execute_all()
        self.assertEqual((second.state, second.customers_scored), ("done", 1))
        self.assertEqual(score.frequency, 2, "c1 was rescored")
        self.assertEqual(score.rescore_requested_at, requested)

    ORDER_FIGURES = (
        "frequency",
        "repeat_purchases",
        "monetary_total",
        "monetary_avg",
        "first_order_value",
        "refund_total",
        "first_order_date",
        "last_order_date",
        "recency_days",
    )

    def _order_figures(self, partner):
        score = self._score(partner)
        return {name: score[name] for name in self.ORDER_FIGURES}

    def test_roll_up(self):
        """Contacts' order figures are summed into their commercial partner's, by id
        arrays (dense ids) or by sorting (ids spread wide): the same figures."""
        Run = type(self.Run)
        contacts = (np.array([7, 9, 12], dtype=np.int32), np.array([3, 3, 5], dtype=np.int32))
        rows = {
            "partner": np.array([9, 3, 5, 7, 12, 4], dtype=np.int32),
            "frequency": np.array([1, 2, 1, 3, 1, 1], dtype=np.int64),
            "first": np.array([50, 20, 40, 10, 5, 60], dtype=np.int64),
            "last": np.array([55, 90, 45, 30, 80, 60], dtype=np.int64),
            "total": np.array([10.0, 20.0, 5.0, 30.0, 1.5, 8.0]),
            "first_value": np.array([9.0, 2.0, 4.0, 7.0, 1.2, 4.5]),
        }
        # The first order's value: the row with the earliest first order's (7, then 4, 12).
        expected = [
            [3, 4, 5], [6, 1, 2], [10, 60, 5], [90, 60, 80], [60.0, 8.0, 6.5], [7.0, 4.5, 1.2]
        ]  # fmt: skip
        # Two contacts' first orders at the same instant: the smaller one (as in SQL).
        tied = dict(rows, first=np.array([50, 10, 40, 10, 5, 60], dtype=np.int64))
        for dense in (True, False):
            with patch(
                "odoo.addons.ecrm_addon.models.ecrm_score_run.DENSE_IDS_MIN", 1000 if dense else 0
            ):
                figures = Run._roll_up(contacts, *rows.values())
                self.assertEqual([values.tolist() for values in figures], expected, dense)
                figures = Run._roll_up(contacts, *tied.values())
                self.assertEqual(figures[5].tolist(), [2.0, 4.5, 1.2], dense)
        # Each customer on one row: the same arrays, in customer order.
        figures = Run._roll_up(
            (np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int32)), *rows.values()
        )
        self.assertEqual(figures[0].tolist(), [3, 4, 5, 7, 9, 12])
        self.assertEqual(figures[1].tolist(), [2, 1, 1, 3, 1, 1])
        self.assertEqual(figures[5].tolist(), [2.0, 4.5, 4.0, 7.0, 9.0, 1.2])

    def test_incremental_adds_new_orders(self):
        """Orders numbered after the previous run are added to the customers' scores:
        their other orders are not read again, and no order is counted twice over
        several incremental runs. The figures are those of a full run."""
        first = self._run()
        self.assertEqual(first.order_watermark, max(self.env["sale.order"].search([]).ids))
        first.started_at = self.now - timedelta(hours=1)
        self._move_back(hours=2)
        self._order_on(self.c2, self._at(1), 75, company=self.company_r)
        c4_contact = self.env["res.partner"].create({"name": "C4 buyer", "parent_id": self.c4.id})
        self._order_on(c4_contact, self._at(2), 25, company=self.company_r)
        self.env["ecrm.interaction"].create(
            {
                "partner_id": self.c5.id,
                "channel_id": self.env.ref("ecrm_addon.ecrm_channel_phone").id,
                "company_id": self.company_r.id,
                "direction": "inbound",
                "date": self.now - timedelta(hours=3),
            }
        )
        run = self._run(run_type="incremental")
        self.assertEqual(run.customers_scored, 3)
        self.assertEqual(
            (self._score(self.c2).frequency, self._score(self.c2).monetary_total), (2, 125)
        )
        self.assertEqual(
            (self._score(self.c4).frequency, self._score(self.c4).monetary_total), (3, 325)
        )
        c5 = self._score(self.c5)
        self.assertEqual((c5.frequency, c5.monetary_total, c5.refund_total), (1, 370, 30))
        self.assertEqual(c5.interaction_count_recent, 1)
        # Nothing new: nobody rescored, nothing counted twice.
        self.assertEqual(self._run(run_type="incremental").customers_scored, 0)
        self._order_on(self.c2, self._at(0), 10, company=self.company_r)
        self.assertEqual(self._run(run_type="incremental").customers_scored, 1)
        incremental = {partner: self._order_figures(partner) for partner in (self.c2, self.c4)}
        self.assertEqual(incremental[self.c2]["frequency"], 3)
        self._run()
        for partner, figures in incremental.items():
            self.assertEqual(figures, self._order_figures(partner), partner.name)
        # The score's figures are what the new orders are added to.
        self._score(self.c2).frequency = 10
        self._order_on(self.c2, self._at(0), 10, company=self.company_r)
        self._run(run_type="incremental")
        self.assertEqual(self._score(self.c2).frequency, 11)

    def test_incremental_after_a_run_copying_its_snapshot(self):
        """A full run that has published its scores and is still copying them into the
        monthly history is the run an incremental run starts from: the orders it
        counted are not added a second time."""
        History = self.env["ecrm.customer.score.history"]
        first = self._run()
        first.started_at = self.now - timedelta(hours=2)
        self._move_back(hours=3)
        self._order_on(self.c2, self._at(1), 75, company=self.company_r)
        History.search([("company_id", "=", self.company_r.id)]).unlink()
        second = self.Run.create({"company_id": self.company_r.id, "reference_date": self.today})
        second._execute_step()
        self.assertEqual((second.state, second.step), ("running", "snapshot"))
        second.started_at = self.now - timedelta(hours=1)
        self.assertEqual(self._score(self.c2).frequency, 2)
        self._order_on(self.c2, self._at(0), 10, company=self.company_r)
        run = self.Run.create({"company_id": self.company_r.id, "run_type": "incremental"})
        run._execute_all()
        self.assertEqual((run.base_run_id, run.customers_scored), (second, 1))
        self.assertEqual(self._score(self.c2).frequency, 3)

    def test_incremental_aggregates_confirmed_quotations_again(self):
        """A quotation of before the previous run, confirmed since, may have been seen
        by that run: the customer's orders are aggregated again."""
        first = self._run()
        first.started_at = self.now - timedelta(hours=1)
        self._move_back(hours=2)
        quotation = self.c3.sale_order_ids.filtered(lambda order: order.state == "draft")
        self.assertLess(quotation.id, first.order_watermark)
        self._score(self.c3).frequency = 10  # a mark the new aggregate replaces
        quotation.action_confirm()
        quotation.date_order = self.now  # confirmed as the run starts (its reference)
        self.assertEqual(self._run(run_type="incremental").customers_scored, 1)
        score = self._score(self.c3)
        self.assertEqual((score.frequency, score.monetary_total, score.recency_days), (2, 1119, 0))

    def test_incremental_after_runs_without_watermark(self):
        """After a run of an earlier version (no order watermark), the changed
        customers are aggregated again from all their orders."""
        first = self._run()
        first.write({"started_at": self.now - timedelta(hours=1), "order_watermark": 0})
        self._move_back(hours=2)
        self._order_on(self.c2, self._at(1), 75, company=self.company_r)
        self._score(self.c2).frequency = 10  # a mark the new aggregate replaces
        self.assertEqual(self._run(run_type="incremental").customers_scored, 1)
        self.assertEqual(self._score(self.c2).frequency, 2)

    def test_incremental_ignores_runs_of_the_past(self):
        """A run as of a past date publishes no scores: the next incremental run looks
        for changes since the last run of the current scores."""
        first = self._run()
        first.started_at = self.now - timedelta(hours=2)
        self._move_back(hours=3)
        order = self._order_on(self.c2, self._at(1), 75, company=self.company_r)
        self.env.flush_all()
        self.env.cr.execute(
            "UPDATE sale_order SET create_date = %s, write_date = %s WHERE id = %s",
            [self.now - timedelta(minutes=90)] * 2 + [order.id],
        )
        past = self._run(reference_date=self.today - timedelta(days=60))
        past.started_at = self.now - timedelta(hours=1)
        self.assertFalse(past._publishes_while_scoring())
        run = self._run(run_type="incremental")
        self.assertEqual((run.base_run_id, run.customers_scored), (first, 1))
        self.assertEqual(self._score(self.c2).frequency, 2)

    def _work_tables(self, run):
        """The run's result table and batch tables (each created ahead of its batch by
        the writing connection) that exist: by name (a catalog lookup sees the tables
        committed after this transaction's snapshot, which pg_class read in it does
        not)."""
        names = [f"ecrm_score_result_{run.id}"]
        names += [f"ecrm_score_result_{run.id}_{number}" for number in range(10)]
        self.env.cr.execute("SELECT to_regclass(unnest(%s::text[]))", [names])
        return [name for (name,) in self.env.cr.fetchall() if name]

    def test_work_tables_dropped(self):
        # Runs of the current scores publish in their one step and drop their tables.
        self.assertEqual(self._work_tables(self._run(batch_size=2)), [])
        # Runs as of a past date keep their result table until they publish it.
        past = self.today - timedelta(days=40)
        run = self.Run.create({"company_id": self.company_r.id, "reference_date": past})
        run._execute_step()  # aggregate
        self.assertEqual(len(self._work_tables(run)), 1)
        self.Run._gc_work_tables()
        self.assertEqual(len(self._work_tables(run)), 1, "a pending run keeps its table")
        run._execute_all()
        self.assertEqual(self._work_tables(run), [], "a finished run drops its tables")
        # A run killed for good (deleted, or failed) leaves tables the cron drops.
        killed = self.Run.create({"company_id": self.company_r.id, "reference_date": past})
        killed._execute_step()
        killed.state = "failed"
        self.Run._gc_work_tables()
        self.assertEqual(self._work_tables(killed), [])
        # And uninstalling drops every run's.
        pending = self.Run.create({"company_id": self.company_r.id, "reference_date": past})
        pending._execute_step()
        self.Run._gc_work_tables(keep_pending=False)
        self.assertEqual(self._work_tables(pending), [])

    def test_work_mem_setting(self):
        params = self.env["ir.config_parameter"].sudo()
        self.assertEqual(self.Run._work_mem(), "1GB")
        params.set_param("ecrm_addon.score_work_mem", "512MB")
        self.assertEqual(self.Run._work_mem(), "512MB")
        params.set_param("ecrm_addon.score_work_mem", "1GB'; DROP TABLE res_partner; --")
        self.assertEqual(self.Run._work_mem(), "256MB", "anything else falls back")
        self.env.cr.execute("SHOW synchronous_commit")
        self.assertEqual(self.env.cr.fetchone()[0], "on")
        self.assertEqual(self._run().state, "done")
        # Set for the rest of the step's transaction, in one statement: a step's commit
        # does not wait for the disk, its statements are not compiled.
        self.env.cr.execute(
            "SELECT current_setting('synchronous_commit'), current_setting('jit'),"
            " current_setting('work_mem')"
        )
        self.assertEqual(self.env.cr.fetchone(), ("off", "off", "256MB"))

    def test_killed_run_is_invisible_then_resumes(self):
        """A run dies while publishing (here after two batches of one customer): users
        still see the last run's scores, and the next call scores again."""
        first = self._run()
        self.assertEqual(self._score(self.c2).frequency, 1)
        self._order_on(self.c2, self._at(2), 75, company=self.company_r)
        run = self.Run.create({"company_id": self.company_r.id, "reference_date": self.today})
        publish_batch = type(run)._publish_batch
        published = []

        def dying(self, *args):
            if len(published) == 2:
                raise RuntimeError("killed")
            published.append(publish_batch(self, *args))
            return published[-1]

        with (
            patch.object(type(run), "_publish_batch", dying),
            self.assertRaisesRegex(RuntimeError, "killed"),
            self.env.cr.savepoint(),
        ):
            run._execute_step(batch_size=1)
        self.assertEqual(published, [1, 1])
        self.env.invalidate_all()
        self.assertEqual(run.state, "queued")
        self.assertEqual(self._score(self.c2).frequency, 1, "users still see the last run")
        self.assertEqual(self._score(self.c2).scored_at, first.started_at)
        run._execute_all(batch_size=1)  # the next cron call
        self.assertEqual(run.state, "done")
        self.assertEqual(self._score(self.c2).frequency, 2)
        self.assertEqual(self._score(self.c2).scored_at, run.started_at)
        self.assertEqual(self.Score.search_count([("company_id", "=", self.company_r.id)]), 7)

    def test_batches_publish_the_same_scores(self):
        """Published batch after batch (scored, written by a second connection and
        published side by side) or in one batch, a run writes the same scores."""
        names = [name for name, _type in RESULT_COLUMNS]
        domain = [("company_id", "=", self.company_r.id)]
        self._run()
        in_one = self.Score.search_read(domain, ["partner_id", *names], order="partner_id")
        self.Score.search(domain).write({"frequency": 0, "segment_id": False, "clv": 0})
        self.Score.search(domain, limit=1).unlink()  # inserted again
        self._run(batch_size=2)
        in_batches = self.Score.search_read(domain, ["partner_id", *names], order="partner_id")
        # Too few customers to fit the models: no prediction, written as NULL.
        self.env.cr.execute(
            "SELECT count(*) FROM ecrm_customer_score WHERE company_id = %s AND p_alive IS NULL"
            " AND clv IS NULL AND segment_id IS NOT NULL",
            [self.company_r.id],
        )
        self.assertEqual(self.env.cr.fetchone()[0], 7)
        # Without a second connection (the worker's pool is full), batch after batch on
        # the run's cursor.
        self.Score.search(domain).write({"frequency": 0, "segment_id": False, "clv": 0})
        full_pool = patch(
            "odoo.addons.ecrm_addon.models.ecrm_score_run.sql_db.db_connect",
            side_effect=PoolError("The Connection Pool Is Full"),
        )
        with full_pool, self.assertLogs("odoo.addons.ecrm_addon", "WARNING") as logs:
            self._run(batch_size=2)
        self.assertIn("no second connection", logs.output[0])
        in_turn = self.Score.search_read(domain, ["partner_id", *names], order="partner_id")
        for row in in_one + in_batches + in_turn:
            del row["id"]
        self.assertEqual(len(in_one), 7)
        self.assertEqual(in_batches, in_one)
        self.assertEqual(in_turn, in_one)

    def test_result_lost_in_a_crash_is_scored_again(self):
        """A result table (runs as of a past date, backtests) is unlogged: a server crash
        empties it. Publishing must not take that for "no customer any more"."""
        past = self.today - timedelta(days=40)
        run = self.Run.create({"company_id": self.company_r.id, "reference_date": past})
        run._execute_step()  # aggregate and score
        self.assertTrue(run.customers_scored)
        self.env.cr.execute(SQL("TRUNCATE %s", SQL.identifier(f"ecrm_score_result_{run.id}")))
        run._execute_step()  # publish finds nothing: back to aggregating
        self.assertEqual((run.state, run.step), ("running", "aggregate"))
        run._execute_all()
        self.assertEqual(run.state, "done")
        history = self.env["ecrm.customer.score.history"].search([("run_id", "=", run.id)])
        self.assertEqual(len(history), run.customers_scored)

    def test_cron_scores_every_company(self):
        self.Run.search([]).unlink()
        for _call in range(100):
            self.Run._cron_ecrm_score("full", batch_size=50)
            if not self.Run._get_pending_runs():
                break
        runs = self.Run.search([])
        self.assertTrue(runs)
        self.assertEqual(set(runs.mapped("state")), {"done"})
        self.assertIn(self.company_b, runs.company_id)
        self.assertEqual(len(self._score(self.c1)), 1)
        self.assertEqual(len(self._score(self.shared, self.company_b)), 1)

    def test_customer_without_orders_loses_score(self):
        """Whether customers lost their scores is known from the scores counted while
        the models are fitted: in batches published side by side, then in one batch."""
        self._run()
        self.c2.sale_order_ids._action_cancel()
        self._run(batch_size=2)
        self.assertFalse(self._score(self.c2))
        self.assertTrue(self._score(self.c3))
        self.c3.sale_order_ids._action_cancel()
        self._run()
        self.assertFalse(self._score(self.c3))
        self.assertTrue(self._score(self.c1))

    def test_history_and_migration(self):
        first_of_month = self.today.replace(day=1)
        self._run(reference_date=first_of_month - timedelta(days=2))
        self.assertFalse(self._score(self.c1), "a past run fills the history only")
        self._run()
        history = self.env["ecrm.customer.score.history"].search(
            [("partner_id", "=", self.c1.id), ("company_id", "=", self.company_r.id)]
        )
        self.assertEqual(len(history), 2)
        self.assertEqual(history[-1].period, (first_of_month - timedelta(days=2)).replace(day=1))
        migration = self.env["ecrm.segment.migration"].search([("partner_id", "=", self.c1.id)])
        self.assertEqual(len(migration), 1)
        self.assertEqual(migration.from_segment_id, history[-1].segment_id)
        self.assertEqual(migration.to_segment_id, self._score(self.c1).segment_id)

    # ---------------------------------------------------------------- the spend model
    MODEL = {
        "model_fitted": True,
        "bgnbd_r": 0.75,
        "bgnbd_alpha": 60.0,
        "bgnbd_a": 0.8,
        "bgnbd_b": 2.5,
        "gg_p": 6.0,
        "gg_q": 4.0,
        "gg_v": 15.0,
    }

    def test_expected_order_value_of_repeat_orders(self):
        """The expected order value is Gamma-Gamma's of the mean of the repeat orders,
        the first one left out: p (v + x m) / (p x + q - 1), here with p = 6, q = 4,
        v = 15 (set by hand on the base run). The average order value shown stays the
        mean of all orders."""
        # Two orders at the same instant: the first is the smaller one.
        twins = self.env["res.partner"].create({"name": "Twin orders"})
        for price in (80, 30.25):
            self._order_on(twins, self._at(60), price, company=self.company_r)
        first = self._run()
        self.assertEqual(
            [
                self._score(partner).first_order_value
                for partner in (self.c1, self.c4, self.c6, twins)
            ],
            [300, 100, 100, 30.25],
            "the first order's value, in the company's currency (c4: 100 of 200 and 100)",
        )
        first.write(self.MODEL)
        first.started_at = self.now - timedelta(hours=1)
        self._move_back(hours=2)
        # c1: added to its score: 300 (first), 200, 100 and now 40.
        self._order_on(self.c1, self._at(1), 40, company=self.company_r)
        # c2: an order entered late, before its first one (50): now its first.
        self._order_on(self.c2, self._at(250), 20, company=self.company_r)
        # c4: aggregated again (a credit note would do it): 100 (first) then 200.
        self.env["ecrm.customer.score"]._request_rescore([(self.c4.id, self.company_r.id)])
        run = self._run(run_type="incremental")
        self.assertEqual((run.customers_scored, run.gg_p), (3, 6.0))
        c1, c2, c4 = (self._score(partner) for partner in (self.c1, self.c2, self.c4))
        # c1: x = 3, m = (200 + 100 + 40) / 3: 6 (15 + 340) / (18 + 3)
        self.assertAlmostEqual(c1.expected_order_value, 2130 / 21, places=2)
        self.assertAlmostEqual(c1.monetary_avg, 160, places=2, msg="640 / 4, as shown")
        self.assertEqual((c1.first_order_value, c1.repeat_purchases), (300, 3))
        # c2: x = 1, m = 50: 6 (15 + 50) / (6 + 3)
        self.assertAlmostEqual(c2.expected_order_value, 390 / 9, places=2)
        self.assertEqual((c2.first_order_value, c2.frequency), (20, 2))
        # c4: x = 1, m = 200: 6 (15 + 200) / (6 + 3)
        self.assertAlmostEqual(c4.expected_order_value, 1290 / 9, places=2)
        # The same figures as a full run's.
        incremental = {partner: self._order_figures(partner) for partner in (self.c1, self.c2)}
        self._run()
        for partner, figures in incremental.items():
            self.assertEqual(figures, self._order_figures(partner), partner.name)

    def test_incremental_without_first_order_value(self):
        """A score published before the first order's value was kept is aggregated
        again from all the customer's orders, not added to."""
        first = self._run()
        first.write(self.MODEL)
        first.started_at = self.now - timedelta(hours=1)
        self._move_back(hours=2)
        self.env.flush_all()
        self.env.cr.execute(
            "UPDATE ecrm_customer_score SET first_order_value = NULL, frequency = 10"
            " WHERE partner_id = %s",
            [self.c1.id],
        )
        self.env.invalidate_all()
        self._order_on(self.c1, self._at(1), 40, company=self.company_r)
        self.assertEqual(self._run(run_type="incremental").customers_scored, 1)
        score = self._score(self.c1)
        self.assertEqual((score.frequency, score.first_order_value), (4, 300))
        self.assertAlmostEqual(score.expected_order_value, 2130 / 21, places=2)

    # ---------------------------------------------------------------- as of a day
    def _local(self, day, hour, minute=0):
        """A naive UTC datetime of ``day`` at hour:minute in Brussels."""
        moment = BRUSSELS.localize(datetime.combine(day, time(hour, minute)))
        return moment.astimezone(pytz.utc).replace(tzinfo=None)

    def test_reference_day_counted(self):
        """A run as of a day counts that day's purchases, until midnight in the
        company's time zone (Brussels), and not the next day's."""
        day = self.today - timedelta(days=10)
        buyer = self.env["res.partner"].create({"name": "Late buyer"})
        self._order_on(buyer, self._local(day - timedelta(days=20), 11), 100, self.company_r)
        self._order_on(buyer, self._local(day, 23, 30), 60, self.company_r)
        self._order_on(buyer, self._local(day + timedelta(days=1), 0, 30), 999, self.company_r)
        run = self._run(reference_date=day)
        self.assertEqual(run.reference_date, day)
        self.assertTrue(run._is_past())
        self.assertEqual(run._reference_end(), self._local(day + timedelta(days=1), 0))
        customers = run._aggregate(("sale",))
        row = int(np.searchsorted(customers["partner_id"], buyer.id))
        figures = {
            name: customers[name][row].item()
            for name in ("frequency", "x", "t_x", "age", "recency_days", "order_total")
        }
        self.assertEqual(
            figures,
            {"frequency": 2, "x": 1, "t_x": 20, "age": 20, "recency_days": 0, "order_total": 160},
        )
        history = self.env["ecrm.customer.score.history"].search(
            [("partner_id", "=", buyer.id), ("run_id", "=", run.id)]
        )
        self.assertEqual((history.period, history.monetary_total), (day.replace(day=1), 160))
        # Runs queued with an instant (naive UTC) take its day in the company's zone.
        queued = self.Run._queue_run(self.company_r, "full", self._local(day, 0, 30))
        self.assertEqual(queued.reference_date, day)

    def test_backtest_of_a_past_day(self):
        """A backtest as of day B scores what was bought until the end of B (c1's order
        of B: x = 1) and compares with the purchases of the 30 next days, B excluded
        and B + 30 included (c1's order of B + 30, c4's of B + 20)."""
        day = self.today - timedelta(days=40)
        run = self._run(run_type="backtest", reference_date=day, backtest_days=30)
        self.assertEqual(run.state, "done")
        lines = {
            line.repeat_purchases: (line.customers, line.actual) for line in run.backtest_line_ids
        }
        # x = 0: c2 and c4 (c4 buys again); x = 1: c1 (buys again) and c6.
        self.assertEqual(lines, {0: (2, 1), 1: (2, 1)})
        self.assertEqual(run.backtest_actual, 2)

    def test_backtest_refused_before_its_horizon(self):
        """A backtest whose period has not wholly passed would compare its predictions
        with purchases yet to come: refused, with the last day it can be as of."""
        latest = self.today - timedelta(days=31)
        vals = {"company_id": self.company_r.id, "run_type": "backtest", "backtest_days": 30}
        for day in (self.today, latest + timedelta(days=1)):
            with self.assertRaisesRegex(ValidationError, fields.Date.to_string(latest)):
                self.Run.create({**vals, "reference_date": day})
        with self.assertRaises(ValidationError):
            self.Run.create({**vals, "reference_date": latest, "backtest_days": 0})
        run = self.Run.create({**vals, "reference_date": latest})
        with self.assertRaises(ValidationError):
            run.backtest_days = 31
        # Queued before the check (or by SQL): failed, not run.
        self.env.flush_all()
        self.env.cr.execute(
            "UPDATE ecrm_score_run SET reference_date = %s WHERE id = %s", [self.today, run.id]
        )
        self.env.invalidate_all()
        run._execute_all()
        self.assertEqual(run.state, "failed")
        self.assertIn("has not passed yet", run.message)
        self.assertFalse(run.backtest_line_ids)

    def test_migration_to_reference_days(self):
        """18.0.1.8.0: the runs' reference instants become their day in the company's
        time zone (not their UTC day)."""
        path = Path(__file__).parents[1] / "migrations" / "18.0.1.8.0" / "pre-migration.py"
        spec = importlib.util.spec_from_file_location("ecrm_migration_18_0_1_8_0", path)
        migration = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(migration)
        brussels = self.Run.create({"company_id": self.company_r.id})
        utc = self.Run.create({"company_id": self.company_b.id})
        self.company_b.partner_id.tz = False
        self.env.flush_all()
        cr = self.env.cr
        cr.execute("ALTER TABLE ecrm_score_run ALTER COLUMN reference_date TYPE timestamp")
        # 23:30 UTC on 30 September is 1:30 on 1 October in Brussels.
        cr.execute(
            "UPDATE ecrm_score_run SET reference_date = '2026-09-30 23:30:00' WHERE id IN %s",
            [(brussels.id, utc.id)],
        )
        migration.migrate(cr, "18.0.1.7.0")
        migration.migrate(cr, "18.0.1.7.0")  # run again: nothing to do
        self.env.invalidate_all()
        self.assertEqual(brussels.reference_date, date(2026, 10, 1))
        self.assertEqual(utc.reference_date, date(2026, 9, 30))


@tagged("post_install", "-at_install", "ecrm")
class TestEcrmScoreDemo(EcrmScoreCommon):
    """The demo business is big enough to fit the value models."""

    def setUp(self):
        super().setUp()
        self.europe = self.env["res.company"].search([("name", "=", "Brewline Europe GmbH")])
        if not self.europe:
            self.fail("ecrm_addon demo data is not loaded: the test database must have demo data")

    def test_full_run_on_demo_data(self):
        run = self._run()
        self.assertTrue(run.model_fitted, run.message)
        for name in ("bgnbd_r", "bgnbd_alpha", "bgnbd_a", "bgnbd_b", "gg_p", "gg_q", "gg_v"):
            self.assertGreater(run[name], 0, name)
        scores = self.Score.search([("company_id", "=", self.company_a.id)])
        self.assertGreaterEqual(len(scores), 100)
        self.assertTrue(all(0 <= score.p_alive <= 1 for score in scores))
        self.assertTrue(all(score.clv >= 0 for score in scores))
        self.assertAlmostEqual(scores[0].churn_risk, 1 - scores[0].p_alive, places=6)
        self.assertGreater(len(scores.segment_id), 4)
        self.assertGreater(len(scores.tier_id), 1)
        top = self.env["res.partner"].search([("ecrm_is_top_clv", "=", True)])
        self.assertAlmostEqual(len(top.commercial_partner_id) / len(scores), 0.1, delta=0.05)

    def test_backtest(self):
        # The last day whose 180 next days have all passed.
        run = self._run(run_type="backtest", reference_date=self.today - timedelta(days=181))
        self.assertEqual(run.state, "done")
        self.assertTrue(run.model_fitted, run.message)
        self.assertTrue(run.backtest_line_ids)
        self.assertAlmostEqual(
            sum(run.backtest_line_ids.mapped("actual")), run.backtest_actual, places=3
        )
        self.assertGreater(run.backtest_actual, 0)
        self.assertGreater(run.backtest_predicted, 0)
        self.assertFalse(
            self.Score.search([("scored_at", ">=", run.started_at)]), "backtests publish nothing"
        )

    def test_models_fitted_on_a_sample(self):
        """Above ``ecrm_addon.score_fit_customers`` customers the models are fitted on
        that many, the same ones from one run to the next; every customer is scored."""
        full = self._run()
        self.assertTrue(full.model_fitted, full.message)
        self.assertEqual(full.fit_customers, full.customers_scored)
        sample = full.customers_scored - 20
        params = self.env["ir.config_parameter"].sudo()
        params.set_param("ecrm_addon.score_fit_customers", sample)
        first, second = self._run(), self._run()
        self.assertTrue(first.model_fitted, first.message)
        self.assertEqual((first.fit_customers, second.fit_customers), (sample, sample))
        self.assertEqual(first.customers_scored, full.customers_scored)
        self.assertEqual(
            self.Score.search_count([("company_id", "=", full.company_id.id)]),
            full.customers_scored,
        )
        names = ("bgnbd_r", "bgnbd_alpha", "bgnbd_a", "bgnbd_b", "gg_p", "gg_q", "gg_v")
        for name in names:
            # the same customers (the second run starts from the first one's estimates)
            self.assertAlmostEqual(second[name] / first[name], 1, delta=1e-3, msg=name)
        self.assertTrue(
            any(abs(first[name] / full[name] - 1) > 1e-3 for name in names),
            "fitted on the sample, not on every customer",
        )
        # A small sample puts an estimate at its bound, near 0: the run still scores
        # with it (rounded to 6 decimals when stored, it was 0 and failed the run).
        params.set_param("ecrm_addon.score_fit_customers", 40)
        small = self._run()
        self.assertEqual(small.state, "done")
        self.assertTrue(small.model_fitted, small.message)
        scores = self.Score.search([("company_id", "=", full.company_id.id)])
        self.assertTrue(all(0 <= p_alive <= 1 for p_alive in scores.mapped("p_alive")))

    def test_fit_sample_is_a_hash_of_the_ids(self):
        run = self.Run.create({"company_id": self.company_a.id})
        partners = np.arange(1000, 3000, dtype=np.int32)
        self.env["ir.config_parameter"].sudo().set_param("ecrm_addon.score_fit_customers", 0)
        self.assertEqual(run._fit_sample(partners), slice(None))
        params = self.env["ir.config_parameter"].sudo()
        params.set_param("ecrm_addon.score_fit_customers", 2000)
        self.assertEqual(run._fit_sample(partners), slice(None))
        params.set_param("ecrm_addon.score_fit_customers", 300)
        sample = run._fit_sample(partners)
        self.assertEqual(len(sample), 300)
        self.assertTrue((np.diff(sample) > 0).all(), "in customer order")
        np.testing.assert_array_equal(sample, run._fit_sample(partners))
        hashed = (partners.astype(np.uint64) * 2654435761) % 2**32
        chosen = np.zeros(len(partners), dtype=bool)
        chosen[sample] = True
        self.assertLess(hashed[chosen].max(), hashed[~chosen].min())
        # spread over the ids, not their first or last ones
        self.assertLess(abs(np.median(partners[sample]) - np.median(partners)), 200)
        params.set_param("ecrm_addon.score_fit_customers", "many")
        with self.assertLogs("odoo.addons.ecrm_addon.models.ecrm_score_run", "WARNING"):
            self.assertEqual(run._fit_sample(partners), slice(None), "the default, 250,000")


@tagged("post_install", "-at_install", "ecrm")
class TestEcrmScoreNumerics(TransactionCase):
    """The numpy pieces of a run against what PostgreSQL computes itself."""

    def test_spend_model_fitted_on_repeat_orders(self):
        """Customers whose first order comes from another gamma distribution (starter
        kits: mean 120) than their repeat orders (Gamma-Gamma p = 6, q = 4, v = 15: mean
        30): the run's fit recovers the repeat orders' parameters within the tolerance of
        test_ecrm_clv_model's recovery test (15 %). Fitted on the mean of all orders
        (before 18.0.1.8.0) they came out as p = 13.5, q = 3.5, v = 11.1."""
        truth = {"p": 6.0, "q": 4.0, "v": 15.0}
        rng = np.random.default_rng(20240520)
        # 80,000 customers of test_ecrm_clv_model's BG/NBD process (60,865 repeat
        # buyers), in whole days.
        bgnbd = clv.simulate_bgnbd(
            {"r": 0.75, "alpha": 60.0, "a": 0.8, "b": 2.5}, 80_000, 1100, rng
        )
        x = bgnbd["x"].astype(np.int32)
        t_x, age = np.floor(bgnbd["t_x"]).astype(int), np.floor(bgnbd["T"]).astype(int)
        repeat = x > 0
        repeat_mean = np.zeros(len(x))
        repeat_mean[repeat] = clv.simulate_gamma_gamma(truth, x[repeat], rng)
        first_value = rng.gamma(2.0, 60.0, len(x))
        first_day = 9000 - age
        customers = {
            "partner_id": np.arange(1, len(x) + 1, dtype=np.int32),
            "frequency": x + 1,
            "x": x,
            "t_x": t_x,
            "age": age,
            "recency_days": age - t_x,
            "first_day": first_day,
            "last_day": first_day + t_x,
            "order_total": first_value + x * repeat_mean,
            "first_value": first_value,
            "refund": np.zeros(len(x)),
            "interactions_90d": np.zeros(len(x), dtype=np.int32),
            "inbound_share": np.zeros(len(x)),
            "response_rate": np.zeros(len(x)),
        }
        company = self.env["res.company"].create({"name": "e-CRM spend model"})
        run = self.env["ecrm.score.run"].create({"company_id": company.id})
        run._fit(customers)
        self.assertTrue(run.model_fitted, run.message)
        self.assertEqual(run.fit_customers, len(x))
        for name, true in truth.items():
            estimate = run[f"gg_{name}"]
            self.assertLess(abs(estimate / true - 1), 0.15, f"{name}: {estimate:.4f}")
        # Expected order values: the population mean p v / (q - 1) for one-time buyers,
        # their repeat orders' (not the starter kit's) for the others.
        columns = dict(
            zip(
                ["partner_id", *(name for name, _type in run._result_columns())],
                run._scorer(run._settings())(customers),
                strict=True,
            )
        )
        p, q, v = run.gg_p, run.gg_q, run.gg_v
        expected = p * (v + x * repeat_mean) / (p * x + q - 1)
        currency = 10**company.currency_id.decimal_places
        np.testing.assert_allclose(
            columns["expected_order_value"] / currency, expected, rtol=1e-9, atol=1 / currency
        )
        self.assertEqual(columns["first_order_value"].tolist(), first_value.tolist())

    def test_quintile_bounds_follow_cume_dist(self):
        rng = np.random.default_rng(7)
        cases = [
            rng.integers(0, 12, 500).astype(float),  # many ties
            rng.gamma(2.0, 50.0, 333).round(2),
            np.array([5.0] * 40),  # one value: every score is 5
            np.array([1.0, 2.0, 2.0, 2.0, 9.0]),
        ]
        for values in cases:
            self.env.cr.execute(
                """SELECT score, max(value) FROM (
                       SELECT value, ceil(5 * cume_dist() OVER (ORDER BY value)) AS score
                         FROM unnest(%s::float8[]) value) ranked
                   GROUP BY score""",
                [values.tolist()],
            )
            by_score = dict(self.env.cr.fetchall())
            expected, highest = [], None
            for score in range(1, 5):
                highest = by_score.get(score, highest)
                expected.append(highest)
            self.assertEqual(quintile_bounds(values), expected)
            scores = quintile_scores(values, expected)
            self.env.cr.execute(
                """SELECT ceil(5 * cume_dist() OVER (ORDER BY value))::int
                     FROM unnest(%s::float8[]) WITH ORDINALITY AS t(value, position)
                 ORDER BY position""",
                [values.tolist()],
            )
            self.assertEqual(scores.tolist(), [row[0] for row in self.env.cr.fetchall()])

    def test_distinct_rows(self):
        rng = np.random.default_rng(5)
        x, t_x = rng.integers(0, 40, 5000), rng.integers(0, 700, 5000)
        age = t_x + rng.integers(0, 700, 5000)
        for values in ((x, t_x, age), (np.r_[x, 1 << 30], np.r_[t_x, 3], np.r_[age, 9])):
            rows, counts = distinct_rows(*values)
            expected, expected_counts = np.unique(
                np.column_stack(values), axis=0, return_counts=True
            )
            self.assertEqual(rows.tolist(), expected.tolist())
            self.assertEqual(counts.tolist(), expected_counts.tolist())

    def test_local_days_follow_postgresql(self):
        """Local days of UTC timestamps as ``AT TIME ZONE`` gives them, across DST
        changes, half-hour and 45-minute zones, before and after 2000-01-01."""
        rng = np.random.default_rng(3)
        day = 86_400_000_000
        for tz in ("UTC", "Europe/Brussels", "America/Sao_Paulo", "Asia/Kolkata",
                   "Pacific/Chatham", "Australia/Lord_Howe"):  # fmt: skip
            stamps = rng.integers(-3 * 365 * day, 27 * 365 * day, 3000)
            # and every minute around a day of a DST change in Brussels (2026-03-29)
            change = (datetime(2026, 3, 29) - datetime(2000, 1, 1)) // timedelta(microseconds=1)
            stamps = np.concatenate([stamps, change + np.arange(-180, 180) * 60_000_000 - 1])
            self.env.cr.execute(
                """SELECT ((timestamp '2000-01-01' + t * interval '1 microsecond')
                           AT TIME ZONE 'UTC' AT TIME ZONE %s)::date - date '2000-01-01'
                     FROM unnest(%s::int8[]) WITH ORDINALITY AS u(t, position)
                 ORDER BY position""",
                [tz, stamps.tolist()],
            )
            expected = [row[0] for row in self.env.cr.fetchall()]
            self.assertEqual(local_days(stamps, tz).tolist(), expected, tz)
        self.assertEqual(local_days(np.array([], dtype=np.int64), "Europe/Brussels").tolist(), [])

    def test_binary_copy_round_trip(self):
        cr = self.env.cr
        cr.execute("CREATE TEMP TABLE ecrm_copy_test (a int4, b float8) ON COMMIT DROP")
        ids = np.array([1, 7, 2**31 - 1], dtype=np.int32)
        values = np.array([0.5, -1e300, np.nan])
        writer = CopyIn("ecrm_copy_test", [("a", "int4"), ("b", "float8")])
        writer.append(cr, [ids, values])
        # a smaller batch in the same (reused) buffer writes its own rows only
        writer.append(cr, [np.array([3], dtype=np.int32), np.array([2.5])])
        cr.execute("SELECT a, b FROM ecrm_copy_test ORDER BY a")
        rows = cr.fetchall()
        self.assertEqual([row[0] for row in rows], [1, 3, 7, 2**31 - 1])
        self.assertEqual((rows[0][1], rows[1][1], rows[2][1]), (0.5, 2.5, -1e300))
        self.assertTrue(np.isnan(rows[3][1]))
        a, b = copy_out(cr, SQL("SELECT a, b FROM ecrm_copy_test ORDER BY a"), ["int4", "float8"])
        self.assertEqual(a.tolist(), [1, 3, 7, 2**31 - 1])
        self.assertEqual(b[:3].tolist(), [0.5, 2.5, -1e300])
        with self.assertRaises(ValueError):  # a NULL is not a float8 value
            copy_out(cr, SQL("SELECT NULL::float8, 1::float8"), ["float8", "float8"])

    def test_int_array(self):
        """Ids are sent as one int4[] literal, whatever holds them; nothing but integers."""
        cr = self.env.cr
        for values in ([3, 1, 2], {7}, np.array([5, 2**31 - 1], dtype=np.int64), []):
            cr.execute(SQL("SELECT ARRAY(SELECT unnest(%s) ORDER BY 1)", int_array(values)))
            self.assertEqual(cr.fetchone()[0], sorted(int(value) for value in values))
        cr.execute(
            SQL(
                "SELECT count(*) FROM res_partner WHERE id = ANY(%s)",
                int_array([self.env.user.partner_id.id]),
            )
        )
        self.assertEqual(cr.fetchone()[0], 1)
        with self.assertRaises(ValueError):
            int_array(["1}', '{2"])

    def test_binary_copy_score_types(self):
        """Dates, amounts rounded to the currency and codes, as the scoring writes them."""
        cr = self.env.cr
        cr.execute(
            """CREATE TEMP TABLE ecrm_copy_types (
                   id int4, day date, amount numeric, amount3 numeric, code varchar)
               ON COMMIT DROP"""
        )
        days = [date(2000, 1, 1), date(1999, 12, 31), date(2026, 2, 28), date(2100, 1, 1)]
        amounts = np.array([1234.567, -0.004, np.nan, 1e13 + 0.25])
        CopyIn(
            "ecrm_copy_types",
            [("id", "int4"), ("day", "date"), ("amount", ("numeric", 2)),
             ("amount3", ("numeric", 3)), ("code", ("text", 3))],
        ).append(
            cr,
            [
                np.arange(4, dtype=np.int32),
                np.array([date_to_days(day) for day in days]),
                numeric_units(amounts, 2),
                numeric_units(-amounts, 3),
                np.array([b"555", b"123", b"001", b"999"]),
            ],
        )  # fmt: skip
        cr.execute("SELECT day, amount::text, amount3::text, code FROM ecrm_copy_types ORDER BY id")
        self.assertEqual(
            cr.fetchall(),
            [
                (days[0], "1234.57", "-1234.567", "555"),
                (days[1], "0.00", "0.004", "123"),
                (days[2], "NaN", "NaN", "001"),
                (days[3], "10000000000000.25", "-10000000000000.250", "999"),
            ],
        )
        ids, day_numbers = copy_out(
            cr, SQL("SELECT id, day FROM ecrm_copy_types"), ["int4", "date"]
        )
        self.assertEqual(ids.tolist(), [0, 1, 2, 3])
        self.assertEqual(day_numbers.tolist(), [0, -1, date_to_days(days[2]), 36525])
        with self.assertRaises(ValueError):  # too large for the numeric columns
            numeric_units([1e17], 2)

    def test_binary_copy_nulls(self):
        """0 and NaN written as NULL where asked, in every combination, and the buffer
        of rows without NULL still right for the next batch."""
        cr = self.env.cr
        cr.execute(
            """CREATE TEMP TABLE ecrm_copy_nulls (
                   id int4, segment int4, p float8, amount numeric, code varchar, kept float8)
               ON COMMIT DROP"""
        )
        writer = CopyIn(
            "ecrm_copy_nulls",
            [("id", "int4"), ("segment", "int4"), ("p", "float8"),
             ("amount", ("numeric", 2)), ("code", ("text", 1)), ("kept", "float8")],
            nulls={"segment": 0, "p": "nan", "amount": "nan"},
        )  # fmt: skip
        nan = np.nan
        writer.append(
            cr,
            [
                np.arange(6, dtype=np.int32),
                np.array([3, 0, 4, 0, 5, 6], dtype=np.int32),
                np.array([0.25, 0.5, nan, nan, 0.0, 1.0]),
                numeric_units([1.5, nan, 2.5, nan, -3.25, 0.0], 2),
                np.array([b"a", b"b", b"c", b"d", b"e", b"f"]),
                np.array([nan, 1.0, 2.0, 3.0, 4.0, 5.0]),
            ],
        )
        writer.append(
            cr,
            [np.array([6], dtype=np.int32), np.array([7], dtype=np.int32), np.array([0.75]),
             numeric_units([9.99], 2), np.array([b"g"]), np.array([6.0])],
        )  # fmt: skip
        cr.execute(
            "SELECT id, segment, p, amount::text, code, kept FROM ecrm_copy_nulls ORDER BY id"
        )
        rows = cr.fetchall()
        self.assertTrue(np.isnan(rows[0][5]))  # not a column written as NULL: NaN stays
        self.assertEqual(
            [row[:5] for row in rows],
            [
                (0, 3, 0.25, "1.50", "a"),
                (1, None, 0.5, None, "b"),
                (2, 4, None, "2.50", "c"),
                (3, None, None, None, "d"),
                (4, 5, 0.0, "-3.25", "e"),
                (5, 6, 1.0, "0.00", "f"),
                (6, 7, 0.75, "9.99", "g"),
            ],
        )
        self.assertEqual([row[5] for row in rows[1:]], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
