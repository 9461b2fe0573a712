"""What a salesperson of company A must not be able to do, whatever they send the server.

Each test replays a finding of the security probe (company A and company B, a salesperson
of company A only): stored script in a campaign email, mailing or linking company B's
customers, reading company B's campaign plans, forging captured interactions and
parked events, domains that crash the server, recipients refused at delivery.
"""

import importlib.util
import json
from datetime import timedelta
from pathlib import Path

from odoo import Command, fields
from odoo.exceptions import AccessError, UserError, ValidationError
from odoo.tests import Form, tagged
from odoo.tools import SQL, mute_logger

from odoo.addons.mail.tests.common import MockEmail

from .common import EcrmCommon

XSS = (
    '<p>Hi <t t-out="object.name"/></p>'
    '<img src="x" onerror="fetch(\'/web/dataset/call_kw\')">'
    '<script>alert(1)</script><a href="javascript:alert(2)">offer</a>'
)


@tagged("post_install", "-at_install", "ecrm")
class TestEcrmSecurity(EcrmCommon, MockEmail):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.company_a.write(
            {"ecrm_consent_default_policy": "opt_out", "ecrm_pressure_max_touches": 0}
        )
        cls.email = cls.env.ref("ecrm_addon.ecrm_channel_email")
        cls.phone = cls.env.ref("ecrm_addon.ecrm_channel_phone")
        cls.user_salesman.groups_id += cls.env.ref("mass_mailing.group_mass_mailing_user")
        cls.segment_a = cls.env["ecrm.segment"].create(
            {
                "name": "A customers",
                "company_id": cls.company_a.id,
                "domain": repr([("id", "=", cls.customer.id)]),
            }
        )
        cls.segment_b = cls.env["ecrm.segment"].create(
            {
                "name": "B customers",
                "company_id": cls.company_b.id,
                "domain": repr([("id", "=", cls.customer_b.id)]),
            }
        )
        cls.campaign_b = cls.env["ecrm.campaign"].create(
            {
                "name": "B's secret plan",
                "company_id": cls.company_b.id,
                "segment_id": cls.segment_b.id,
                "channel_line_ids": [Command.create({"channel_id": cls.email.id})],
            }
        )
        cls.program_a = cls._coupon_program("A coupon")

    def _as_salesman(self, model):
        return self.env[model].with_user(self.user_salesman).with_company(self.company_a)

    def _campaign_a(self, **vals):
        return self._as_salesman("ecrm.campaign").create(
            {
                "name": "A spring",
                "segment_id": self.segment_a.id,
                "holdout_percent": 0,
                "channel_line_ids": [Command.create({"channel_id": self.email.id})],
                **vals,
            }
        )

    # ------------------------------------------------------------
    # 1. Stored XSS
    # ------------------------------------------------------------

    def test_campaign_html_sanitized(self):
        """A salesperson's script never reaches an administrator's browser; the
        placeholders marketers use stay."""
        campaign = self._campaign_a(email_body=XSS, call_script=XSS, letter_body=XSS)
        for name in ("email_body", "call_script", "letter_body"):
            stored = campaign[name]
            for bad in ("onerror", "<script", "javascript:"):
                self.assertNotIn(bad, stored, name)
        self.assertIn('<t t-out="object.name"', campaign.email_body)
        campaign.write({"email_body": '<p onmouseover="steal()">x</p>'})
        self.assertNotIn("onmouseover", campaign.email_body)

    def test_migration_cleans_stored_bodies(self):
        campaign = self._campaign_a()
        self.env.flush_all()
        self.env.cr.execute(
            SQL("UPDATE ecrm_campaign SET email_body = %s WHERE id = %s", XSS, campaign.id)
        )
        path = Path(__file__).parents[1] / "migrations/18.0.1.8.0/post-migration.py"
        spec = importlib.util.spec_from_file_location("ecrm_post_migration_1_8", path)
        migration = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(migration)
        migration.migrate(self.env.cr, "18.0.1.7.0")
        self.env.cr.execute(SQL("SELECT email_body FROM ecrm_campaign WHERE id = %s", campaign.id))
        body = self.env.cr.fetchone()[0]
        self.assertNotIn("onerror", body)
        self.assertNotIn("<script", body)
        self.assertIn('t-out="object.name"', body)

    # ------------------------------------------------------------
    # 2. Mailing another company's customers
    # ------------------------------------------------------------

    def test_mailing_to_other_company_segment_refused(self):
        Mailing = self._as_salesman("mailing.mailing")
        vals = {
            "subject": "Hello",
            "mailing_model_id": self.env["ir.model"]._get_id("res.partner"),
            "body_html": "<p>Hi</p>",
        }
        with self.assertRaises(ValidationError):
            Mailing.create({**vals, "ecrm_segment_id": self.segment_b.id})
        mailing = Mailing.create({**vals, "ecrm_segment_id": self.segment_a.id})
        with self.assertRaises(ValidationError):
            mailing.write({"ecrm_segment_id": self.segment_b.id})
        with self.assertRaises(ValidationError):
            mailing.write({"ecrm_campaign_id": self.campaign_b.id})
        # What is left is A's segment: the queue (superuser) sends to A's customers only.
        self.assertEqual(
            self.env["res.partner"].search(mailing.sudo()._get_recipients_domain()),
            self.customer,
        )

    def test_frozen_segment_keeps_other_company_out(self):
        segment = self.segment_a.with_user(self.user_salesman)
        segment.action_freeze()
        with self.assertRaises(UserError):
            segment.write({"partner_ids": [Command.link(self.customer_b.id)]})
        # Even written around the ORM, the frozen list only yields the company's customers.
        self.env.cr.execute(
            SQL(
                "INSERT INTO ecrm_segment_partner_rel (segment_id, partner_id) VALUES (%s, %s)",
                segment.id,
                self.customer_b.id,
            )
        )
        self.env.invalidate_all()
        self.assertEqual(
            self.env["res.partner"].search(segment.sudo()._get_partner_domain()), self.customer
        )

    # ------------------------------------------------------------
    # 6. Campaign channels and offers of another company
    # ------------------------------------------------------------

    def test_campaign_lines_follow_the_company(self):
        Channel = self._as_salesman("ecrm.campaign.channel")
        Offer = self._as_salesman("ecrm.campaign.offer")
        self.assertFalse(Channel.search([("campaign_id", "=", self.campaign_b.id)]))
        line_b = self.campaign_b.channel_line_ids
        with self.assertRaises(AccessError):
            line_b.with_user(self.user_salesman).read(["channel_id"])
        with self.assertRaises(AccessError):
            line_b.with_user(self.user_salesman).unlink()
        with self.assertRaises(AccessError):
            Channel.create({"campaign_id": self.campaign_b.id, "channel_id": self.phone.id})
        gold = self.env.ref("ecrm_addon.ecrm_loyalty_tier_gold")
        with self.assertRaises(AccessError):
            Offer.create(
                {
                    "campaign_id": self.campaign_b.id,
                    "tier_id": gold.id,
                    "program_id": self.program_a.id,
                }
            )
        # The company's own campaign takes its own programs only.
        program_b = self.program_a.sudo().copy({"company_id": self.company_b.id})
        campaign = self._campaign_a()
        with self.assertRaises(UserError):
            Offer.create(
                {"campaign_id": campaign.id, "tier_id": gold.id, "program_id": program_b.id}
            )
        offer = Offer.create(
            {"campaign_id": campaign.id, "tier_id": gold.id, "program_id": self.program_a.id}
        )
        self.assertEqual(offer.company_id, self.company_a)

    # ------------------------------------------------------------
    # 7. Customers of another company
    # ------------------------------------------------------------

    def test_partner_of_other_company_refused(self):
        Interaction = self._as_salesman("ecrm.interaction")
        with self.assertRaises(ValidationError):
            Interaction.create(
                {"partner_id": self.customer_b.id, "channel_id": self.phone.id, "subject": "x"}
            )
        mine = Interaction.create(
            {"partner_id": self.customer.id, "channel_id": self.phone.id, "subject": "Call"}
        )
        with self.assertRaises(ValidationError):
            mine.write({"partner_id": self.customer_b.id})
        campaign = self._campaign_a()
        with self.assertRaises(UserError):
            self._as_salesman("ecrm.campaign.recipient").create(
                {
                    "campaign_id": campaign.id,
                    "partner_id": self.customer_b.id,
                    "company_id": self.company_a.id,
                }
            )

    # ------------------------------------------------------------
    # 9. Forged captured interactions and parked events
    # ------------------------------------------------------------

    def test_manual_interaction_cannot_pose_as_captured(self):
        Interaction = self._as_salesman("ecrm.interaction")
        call = {"partner_id": self.customer.id, "channel_id": self.phone.id, "subject": "Call"}
        mine = Interaction.create(call)
        for vals in (
            {"capture_mode": "api"},
            {"source_system": "telephony", "external_ref": "call-1"},
        ):
            with self.assertRaises(AccessError):
                mine.write(vals)
            with self.assertRaises(AccessError):
                Interaction.create({**call, **vals})
        with self.assertRaises(AccessError):
            Interaction.with_context(default_capture_mode="api").create(call)
        with self.assertRaises(ValidationError):
            mine.write({"res_model": "mailing.trace", "res_id": 1})
        self.assertEqual((mine.capture_mode, mine.external_ref), ("manual", False))

    def _parked_event(self, payload):
        return (
            self.env["ecrm.unmatched.event"]
            .sudo()
            .create(
                {
                    "company_id": self.company_a.id,
                    "source_system": "telephony",
                    "external_ref": "call-9",
                    "channel_id": self.phone.id,
                    "identifier_kind": "phone",
                    "identifier": "+32470999999",
                    "reason": "unknown",
                    "payload": payload,
                }
            )
        )

    def test_parked_event_cannot_be_rewritten(self):
        payload = json.dumps(
            {
                "external_id": "call-9",
                "channel": "phone",
                "direction": "inbound",
                "occurred_at": "2025-01-01T10:00:00Z",
                "subject": "Real call",
            }
        )
        event = self._parked_event(payload).with_user(self.user_salesman)
        for vals in (
            {"payload": json.dumps({"subject": "Forged"})},
            {"external_ref": "other"},
            {"source_system": "shop"},
        ):
            with self.assertRaises(AccessError):
                event.write(vals)
        self.assertEqual(event.payload, payload)
        event.action_discard()
        self.assertEqual(event.state, "discarded")

    def test_parked_event_not_json_is_a_clear_error(self):
        event = self._parked_event("{not json").with_user(self.user_salesman)
        with self.assertRaisesRegex(UserError, "not a JSON object"):
            event._resolve(self.customer)
        self.assertEqual(event.state, "pending")

    def test_empty_logged_interaction_refused(self):
        """Logged by hand with no subject, no notes and no outcome: nothing to count."""
        Interaction = self._as_salesman("ecrm.interaction")
        empty = {"partner_id": self.customer.id, "channel_id": self.phone.id}
        with self.assertRaises(ValidationError):
            Interaction.create(empty)
        with self.assertRaises(ValidationError):
            Interaction.create({**empty, "summary": "<p><br></p>"})
        for filled in ({"subject": "Call"}, {"outcome": "no_answer"}, {"summary": "<p>Hi</p>"}):
            Interaction.create({**empty, **filled})
        logged = Interaction.create({**empty, "outcome": "voicemail"})
        with self.assertRaises(ValidationError):
            logged.write({"outcome": False})

    def test_logging_a_call_schedules_the_follow_up(self):
        """The Log an Interaction dialog schedules the next step in the same save."""
        action = self.env["ecrm.interaction"]._action_log_interaction(self.customer)
        form = Form(
            self.env["ecrm.interaction"]
            .with_user(self.user_salesman)
            .with_context(**action["context"]),
            view="ecrm_addon.ecrm_interaction_view_form_log",
        )
        form.subject = "Asked for a quote"
        form.followup_date = fields.Date.today() + timedelta(days=3)
        form.followup_summary = "Call back with the quote"
        logged = form.save()
        activity = self.env["mail.activity"].search(
            [("res_model", "=", "res.partner"), ("res_id", "=", self.customer.id)]
        )
        self.assertEqual(len(activity), 1)
        self.assertEqual(
            (activity.summary, activity.date_deadline, activity.user_id, activity.activity_type_id),
            (
                "Call back with the quote",
                fields.Date.today() + timedelta(days=3),
                self.user_salesman,
                self.env.ref("mail.mail_activity_data_call"),
            ),
        )
        self.assertEqual(logged.capture_mode, "manual")

    # ------------------------------------------------------------
    # 13. Domains that crashed the server
    # ------------------------------------------------------------

    @mute_logger("odoo.sql_db")
    def test_bad_segment_domains_are_validation_errors(self):
        Segment = self._as_salesman("ecrm.segment")
        for domain in (
            '[("ecrm_days_since_contact", ">", 1e400)]',
            '[("ecrm_preferred_channel_id", "in", ["x", "y"])]',
            '[("name",)]',
            "[1]",
            '[("id", ">", 10**30)]',
            '"not a list"',
            "[(",
        ):
            with self.subTest(domain=domain), self.assertRaises(ValidationError):
                Segment.create({"name": "Bad", "domain": domain})
        # The transaction is still usable afterwards.
        self.assertTrue(Segment.create({"name": "Good", "domain": '[("name", "ilike", "a")]'}))

    # ------------------------------------------------------------
    # 14. Opted out between "send" and delivery
    # ------------------------------------------------------------

    def test_opt_out_before_delivery_is_skipped_not_sent(self):
        late = self.env["res.partner"].create({"name": "Lou Late", "email": "lou@example.com"})
        stays = self.env["res.partner"].create({"name": "Sue Stays", "email": "sue@example.com"})
        self.segment_a.domain = repr([("id", "in", (late | stays).ids)])
        campaign = self._campaign_a(email_subject="Hi", email_body="<p>Hi</p>")
        campaign.action_prepare()
        campaign.action_send()
        self.env["ecrm.consent.event"].create(
            {
                "partner_id": late.id,
                "company_id": self.company_a.id,
                "channel_id": self.email.id,
                "state": "opt_out",
            }
        )
        with self.mock_mail_gateway(mail_unlink_sent=False):
            campaign.sudo().mailing_ids.action_send_mail()
        recipients = {r.partner_id: r for r in campaign.recipient_ids}
        self.assertEqual(
            (recipients[late].state, recipients[late].skip_reason), ("skipped", "opted_out")
        )
        self.assertEqual(recipients[stays].state, "sent")
        self.assertEqual(campaign.contacted_count, 1)
        self.assertNotIn("lou@example.com", [mail.email_to for mail in self._new_mails])
        skip = self.env["ecrm.interaction"].search(
            [("partner_id", "=", late.id), ("outcome", "=", "skipped")]
        )
        self.assertEqual(len(skip), 1)
