import hashlib
import math
from datetime import timedelta
from unittest.mock import patch

from odoo import Command, fields
from odoo.exceptions import AccessError, UserError
from odoo.tests import tagged

from odoo.addons.mail.tests.common import MockEmail

from ..models import ecrm_campaign
from .common import EcrmCommon


@tagged("post_install", "-at_install", "ecrm")
class TestEcrmCampaign(EcrmCommon, MockEmail):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.company_a.write(
            {"ecrm_consent_default_policy": "opt_out", "ecrm_pressure_max_touches": 0}
        )
        channel = cls.env.ref
        cls.email = channel("ecrm_addon.ecrm_channel_email")
        cls.sms = channel("ecrm_addon.ecrm_channel_sms")
        cls.phone = channel("ecrm_addon.ecrm_channel_phone")
        cls.letter = channel("ecrm_addon.ecrm_channel_letter")
        cls.email.with_company(cls.company_a).cost_per_contact = 1.0
        Partner = cls.env["res.partner"]
        cls.p_email = Partner.create({"name": "Emma Email", "email": "emma@example.com"})
        cls.p_sms = Partner.create({"name": "Sam Sms", "phone": "+32470000001"})
        cls.p_phone = Partner.create({"name": "Pia Phone", "phone": "+32470000002"})
        cls.p_letter = Partner.create({"name": "Leo Letter", "street": "Rue 1", "city": "Namur"})
        cls.p_out = Partner.create({"name": "Otto Out", "email": "otto@example.com"})
        cls.p_none = Partner.create({"name": "Nina None"})
        Event = cls.env["ecrm.consent.event"]
        for partner, code, state in (
            (cls.p_sms, cls.sms, "opt_in"),
            (cls.p_phone, cls.phone, "opt_in"),
            (cls.p_out, cls.email, "opt_out"),
        ):
            Event.create(
                {
                    "partner_id": partner.id,
                    "company_id": cls.company_a.id,
                    "channel_id": code.id,
                    "state": state,
                }
            )
        # Letters need an explicit opt-in in no policy: the company default (opt-out) rules.
        cls.everyone = cls.p_email | cls.p_sms | cls.p_phone | cls.p_letter | cls.p_out | cls.p_none
        cls.segment = cls.env["ecrm.segment"].create(
            {
                "name": "Campaign test",
                "company_id": cls.company_a.id,
                "domain": repr([("id", "in", cls.everyone.ids)]),
            }
        )
        cls.program = cls._coupon_program("10% coupon")

    def _campaign(self, **vals):
        return self.env["ecrm.campaign"].create(
            {
                "name": "Spring",
                "segment_id": self.segment.id,
                "company_id": self.company_a.id,
                "holdout_percent": 0,
                "channel_line_ids": [
                    Command.create({"channel_id": channel.id, "sequence": index})
                    for index, channel in enumerate((self.email, self.sms, self.phone, self.letter))
                ],
                "email_subject": "Hello",
                "email_body": '<p>Dear <t t-out="object.name"/>, your code is '
                '<t t-out="object.ecrm_campaign_coupon_code(ecrm_campaign_id)"/></p>',
                **vals,
            }
        )

    def _recipient(self, campaign, partner):
        return campaign.recipient_ids.filtered(lambda r: r.partner_id == partner)

    def test_channel_choice_by_consent(self):
        campaign = self._campaign()
        campaign.action_prepare()
        expected = {
            self.p_email: ("planned", self.email, False),
            self.p_sms: ("planned", self.sms, False),
            self.p_phone: ("planned", self.phone, False),
            self.p_letter: ("planned", self.letter, False),
            self.p_out: ("skipped", self.env["ecrm.channel"], "opted_out"),
            self.p_none: ("skipped", self.env["ecrm.channel"], "no_address"),
        }
        for partner, (state, channel, reason) in expected.items():
            recipient = self._recipient(campaign, partner)
            self.assertEqual(
                (recipient.state, recipient.channel_id, recipient.skip_reason),
                (state, channel, reason),
                partner.name,
            )
        # Each skip is logged with its reason on the customer.
        logged = self.env["ecrm.interaction"].search(
            [("res_model", "=", "ecrm.campaign.recipient"), ("partner_id", "=", self.p_out.id)]
        )
        self.assertEqual(logged.outcome, "skipped")
        self.assertIn("Opted out", logged.subject)
        self.assertEqual(logged.campaign_id, campaign.utm_campaign_id)
        self.assertEqual(logged.channel_id, self.email, "the campaign's first channel")
        phone_only = self._campaign(
            name="Calls",
            channel_line_ids=[Command.create({"channel_id": self.phone.id})],
        )
        phone_only.action_prepare()
        skip = self.env["ecrm.interaction"].search(
            [
                ("campaign_id", "=", phone_only.utm_campaign_id.id),
                ("partner_id", "=", self.p_out.id),
            ]
        )
        self.assertEqual(skip.channel_id, self.phone, "never an email for a phone campaign")
        self.assertFalse(self.p_out.ecrm_last_contact_date, "a skip is no contact")

    def test_preferred_channel_first(self):
        self.env["ecrm.interaction"].create(
            {
                "partner_id": self.p_sms.id,
                "channel_id": self.phone.id,
                "direction": "inbound",
                "company_id": self.company_a.id,
            }
        )
        campaign = self._campaign(prefer_preferred_channel=True)
        campaign.action_prepare()
        self.assertEqual(self._recipient(campaign, self.p_sms).channel_id, self.sms,
                         "phone is preferred but Sam did not agree to calls")  # fmt: skip
        self.env["ecrm.consent.event"].create(
            {"partner_id": self.p_sms.id, "channel_id": self.phone.id, "state": "opt_in"}
        )
        campaign = self._campaign(prefer_preferred_channel=True, name="Again")
        campaign.action_prepare()
        self.assertEqual(self._recipient(campaign, self.p_sms).channel_id, self.phone)

    def test_coupons_unique_and_by_tier(self):
        premium = self.program.copy({"name": "20% coupon"})
        gold = self.env.ref("ecrm_addon.ecrm_loyalty_tier_gold")
        self.env["ecrm.customer.score"].create(
            {"partner_id": self.p_email.id, "company_id": self.company_a.id, "tier_id": gold.id}
        )
        campaign = self._campaign(
            coupon_program_id=self.program.id,
            offer_ids=[Command.create({"tier_id": gold.id, "program_id": premium.id})],
        )
        campaign.action_prepare()
        planned = campaign.recipient_ids.filtered(lambda r: r.state == "planned")
        codes = planned.mapped("coupon_code")
        self.assertEqual(len(codes), 4)
        self.assertEqual(len(set(codes)), 4, "one unique code per contacted customer")
        self.assertFalse(campaign.recipient_ids.filtered(lambda r: r.state == "skipped").coupon_id)
        self.assertEqual(self._recipient(campaign, self.p_email).coupon_id.program_id, premium)
        self.assertEqual(self._recipient(campaign, self.p_sms).coupon_id.program_id, self.program)
        self.assertEqual(self._recipient(campaign, self.p_sms).coupon_id.partner_id, self.p_sms)

    def test_coupons_like_odoo_and_drawn_again_on_collision(self):
        """Cards made in bulk are what loyalty.card.create makes: active (found by their
        code), in the program's company, with the points of its reward and a history
        line; a code some card already holds is drawn again."""
        self.program.reward_ids.required_points = 2
        campaign = self._campaign(coupon_program_id=self.program.id)
        key = "k" * 32  # the first draw gives Emma a code that a card already holds
        digest = hashlib.sha256(f"{key}{self.p_email.id}".encode()).hexdigest()
        taken = self.env["loyalty.card"].create(
            {"program_id": self.program.id, "code": f"044{digest[:13]}"}
        )
        with patch.object(ecrm_campaign.secrets, "token_hex", side_effect=[key, "j" * 32]):
            campaign.action_prepare()
        cards = campaign.recipient_ids.coupon_id
        self.assertEqual(len(cards), 4)
        self.assertEqual(
            self.env["loyalty.card"].search([("code", "in", cards.mapped("code"))]), cards
        )
        self.assertNotIn(taken, cards)
        self.assertEqual(self._recipient(campaign, self.p_email).coupon_id.partner_id, self.p_email)
        for card in cards:
            self.assertRegex(card.code, r"^044[0-9a-f]{13}$")
            self.assertEqual((card.points, card.company_id), (2, self.company_a))
            self.assertEqual(card.history_ids.issued, 2)
            self.assertIn("Spring", card.history_ids.description)

    def test_queries_do_not_grow_with_recipients(self):
        crowd = self.env["res.partner"].create(
            [{"name": f"C{i}", "email": f"c{i}@example.com"} for i in range(40)]
        )
        counts = []
        for name, partners in (
            ("Warm-up", self.everyone),
            ("Small", self.everyone),
            ("Large", self.everyone | crowd),
        ):
            self.segment.domain = repr([("id", "in", partners.ids)])
            campaign = self._campaign(name=name, coupon_program_id=self.program.id)
            self.env.flush_all()
            self.env.invalidate_all()
            before = self.cr.sql_log_count
            with self.mock_mail_gateway(mail_unlink_sent=False):
                campaign.action_prepare()
                campaign.action_send()
                self.env.flush_all()
            counts.append(self.cr.sql_log_count - before)
            self.assertEqual(len(campaign.recipient_ids), len(partners))
        # 40 more recipients, at most a cache miss more: no query per recipient.
        self.assertAlmostEqual(counts[2], counts[1], delta=3)

    def test_contact_pressure_cap(self):
        self.company_a.ecrm_pressure_max_touches = 1
        self.env["ecrm.interaction"].create(
            {
                "partner_id": self.p_email.id,
                "channel_id": self.email.id,
                "company_id": self.company_a.id,
                "capture_mode": "campaign",
                "date": fields.Datetime.now() - timedelta(days=3),
            }
        )
        campaign = self._campaign()
        campaign.action_prepare()
        recipient = self._recipient(campaign, self.p_email)
        self.assertEqual((recipient.state, recipient.skip_reason), ("skipped", "capped"))

    def test_holdout_stratified_and_never_contacted(self):
        Partner = self.env["res.partner"]
        champions = self.env.ref("ecrm_addon.ecrm_rfm_segment_champions")
        lost = self.env.ref("ecrm_addon.ecrm_rfm_segment_lost")
        crowd = Partner.create([{"name": f"C{i}", "email": f"c{i}@example.com"} for i in range(30)])
        self.env["ecrm.customer.score"].create(
            [
                {
                    "partner_id": partner.id,
                    "company_id": self.company_a.id,
                    "segment_id": (champions if index < 20 else lost).id,
                }
                for index, partner in enumerate(crowd)
            ]
        )
        self.segment.domain = repr([("id", "in", crowd.ids)])
        campaign = self._campaign(holdout_percent=10)
        campaign.action_prepare()
        holdout = campaign.recipient_ids.filtered(lambda r: r.group == "holdout")
        self.assertEqual(len(holdout.filtered(lambda r: r.stratum_id == champions)), 2)
        self.assertEqual(len(holdout.filtered(lambda r: r.stratum_id == lost)), 1)
        self.assertEqual(set(holdout.mapped("state")), {"holdout"})
        self.assertFalse(any(holdout.mapped("skip_reason")), "the holdout is no skip")
        with self.mock_mail_gateway(mail_unlink_sent=False):
            campaign.action_send()
            campaign.mailing_ids.action_send_mail()
        mailed = set(campaign.mailing_ids.mailing_trace_ids.mapped("res_id"))
        self.assertEqual(len(mailed), 27)
        self.assertFalse(mailed & set(holdout.partner_id.ids), "the holdout is never contacted")

    def test_send_is_idempotent_and_opt_out_wins(self):
        campaign = self._campaign(coupon_program_id=self.program.id)
        campaign.action_prepare()
        # Emma opts out while the campaign waits to be sent.
        self.env["ecrm.consent.event"].create(
            {"partner_id": self.p_email.id, "channel_id": self.email.id, "state": "opt_out"}
        )
        with self.mock_mail_gateway(mail_unlink_sent=False):
            campaign.action_send()
            campaign.action_send()  # a retry sends nothing twice
            for mailing in campaign.mailing_ids:
                mailing.action_send_mail()
        emma = self._recipient(campaign, self.p_email)
        self.assertEqual((emma.state, emma.skip_reason), ("skipped", "opted_out"))
        self.assertEqual(len(campaign.mailing_ids), 1, "SMS only: Sam; email: nobody left")
        self.assertEqual(campaign.mailing_ids.mailing_type, "sms")
        calls = self.env["mail.activity"].search(
            [("res_model", "=", "res.partner"), ("res_id", "=", self.p_phone.id)]
        )
        self.assertEqual(len(calls), 1)
        sent = self.env["ecrm.interaction"].search(
            [("campaign_id", "=", campaign.utm_campaign_id.id), ("outcome", "=", "sent")]
        )
        self.assertEqual(
            set(sent.partner_id.ids), {self.p_sms.id, self.p_phone.id, self.p_letter.id}
        )
        self.assertEqual(len(sent), 3)

    def test_templates_render_per_customer(self):
        self.env["ecrm.consent.event"].create(
            {"partner_id": self.p_out.id, "channel_id": self.email.id, "state": "opt_in"}
        )
        campaign = self._campaign(coupon_program_id=self.program.id)
        campaign.action_prepare()
        with self.mock_mail_gateway(mail_unlink_sent=False):
            campaign.action_send()
            campaign.mailing_ids.filtered(lambda m: m.mailing_type == "mail").action_send_mail()
        for partner in (self.p_email, self.p_out):
            mail = self.env["mail.mail"].search(
                [("res_id", "=", partner.id), ("model", "=", "res.partner")], limit=1
            )
            code = self._recipient(campaign, partner).coupon_code
            self.assertIn(partner.name, mail.body_html)
            self.assertIn(code, mail.body_html)

    def test_letters_print(self):
        campaign = self._campaign()
        campaign.action_prepare()
        html = self.env["ir.actions.report"]._render_qweb_html(
            "ecrm_addon.report_ecrm_campaign_letters", campaign.ids
        )[0]
        self.assertIn(b"Leo Letter", html)
        self.assertNotIn(b"Emma Email", html)

    def test_uplift_and_roi_hand_computed(self):
        campaign = self._campaign(fixed_cost=100)
        campaign.action_prepare()
        with self.mock_mail_gateway(mail_unlink_sent=False):
            campaign.action_send()
        sent_at = fields.Datetime.now() - timedelta(days=5)
        contacted = campaign.recipient_ids.filtered(lambda r: r.state == "sent")
        holdout_partners = self.env["res.partner"].create(
            [{"name": "H1", "email": "h1@example.com"}, {"name": "H2", "email": "h2@example.com"}]
        )
        self.env["ecrm.campaign.recipient"].create(
            [
                {
                    "campaign_id": campaign.id,
                    "partner_id": partner.id,
                    "company_id": self.company_a.id,
                    "group": "holdout",
                    "state": "holdout",
                    "sent_at": sent_at,
                }
                for partner in holdout_partners
            ]
        )
        contacted.write({"sent_at": sent_at, "channel_id": self.email.id})
        campaign.date_start = sent_at.date()
        for partner, amount in zip(contacted.partner_id[:3], (100, 200, 300), strict=True):
            order = self._create_order(partner, price=amount)
            order.date_order = sent_at + timedelta(days=2)
        late = self._create_order(contacted.partner_id[3], price=999)
        late.date_order = sent_at + timedelta(days=60)  # outside the 30-day window
        campaign.action_compute_results()
        self.assertEqual(campaign.converted_count, 3)
        self.assertAlmostEqual(campaign.revenue, 600)
        self.assertAlmostEqual(campaign.cost, 104)  # fixed 100 + 4 emails at 1.0
        self.assertAlmostEqual(campaign.conversion_rate, 0.75)
        self.assertAlmostEqual(campaign.holdout_conversion_rate, 0.0)
        self.assertAlmostEqual(campaign.uplift, 0.75)
        half_width = 1.959964 * math.sqrt(0.75 * 0.25 / 4)
        self.assertAlmostEqual(campaign.uplift_low, 0.75 - half_width, places=4)
        self.assertAlmostEqual(campaign.uplift_high, 0.75 + half_width, places=4)
        self.assertAlmostEqual(campaign.incremental_revenue, 600)
        se_mean = math.sqrt((50000 / 3) / 4)
        self.assertAlmostEqual(campaign.incremental_revenue_low, (150 - 1.959964 * se_mean) * 4, 2)
        self.assertAlmostEqual(campaign.roi, (600 - 104) / 104, places=4)

    def test_states_and_access(self):
        campaign = self._campaign()
        with self.assertRaises(UserError):
            campaign.action_send()
        campaign.action_prepare()
        with self.assertRaises(UserError):
            campaign.action_prepare()
        self.assertTrue(campaign.with_user(self.user_salesman).read(["name"]))
        with self.assertRaises(AccessError):
            campaign.with_user(self.user_salesman_b).read(["name"])
