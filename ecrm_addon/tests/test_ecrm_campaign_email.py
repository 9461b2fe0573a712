"""Campaign emails marketers write with placeholders, preview for a recipient, test, and
that reach the customer with their coupon, the preference centre and one-click
unsubscribe."""

import re

from odoo import Command, tools
from odoo.exceptions import AccessError, UserError
from odoo.tests import tagged

from odoo.addons.mail.tests.common import MockEmail

from .common import EcrmCommon

# What the editor stores when a marketer inserts placeholders with /field.
BODY = (
    '<p>Dear <t t-out="object.name">Customer</t>, as a '
    '<t t-out="object.ecrm_tier_id.name">tier</t> customer your code is '
    '<t t-out="object.ecrm_campaign_coupon">CODE</t>.</p>'
)


@tagged("post_install", "-at_install", "ecrm")
class TestEcrmCampaignEmail(EcrmCommon, MockEmail):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.company_a.write(
            {"ecrm_consent_default_policy": "opt_out", "ecrm_pressure_max_touches": 0}
        )
        cls.email = cls.env.ref("ecrm_addon.ecrm_channel_email")
        cls.gold = cls.env.ref("ecrm_addon.ecrm_loyalty_tier_gold")
        cls.emma = cls.env["res.partner"].create({"name": "Emma Email", "email": "emma@ex.com"})
        cls.env["ecrm.customer.score"].create(
            {"partner_id": cls.emma.id, "company_id": cls.company_a.id, "tier_id": cls.gold.id}
        )
        cls.segment = cls.env["ecrm.segment"].create(
            {
                "name": "Email test",
                "company_id": cls.company_a.id,
                "domain": repr([("id", "=", cls.emma.id)]),
            }
        )
        program = cls._coupon_program("10% coupon")
        cls.campaign = cls.env["ecrm.campaign"].create(
            {
                "name": "Spring",
                "segment_id": cls.segment.id,
                "company_id": cls.company_a.id,
                "holdout_percent": 0,
                "coupon_program_id": program.id,
                "channel_line_ids": [Command.create({"channel_id": cls.email.id})],
                "email_subject": "{{ object.name }}, a gift for you",
                "email_body": BODY,
            }
        )

    def test_placeholders_reach_the_customer(self):
        """The email the customer receives holds their name, tier and coupon code, the
        preference centre link and the one-click unsubscribe headers."""
        self.campaign.action_prepare()
        code = self.campaign.recipient_ids.coupon_code
        self.assertTrue(code)
        with self.mock_mail_gateway(mail_unlink_sent=False):
            self.campaign.action_send()
            self.campaign.mailing_ids.action_send_mail()
        self.assertEqual(len(self._mails), 1)
        sent = self._mails[0]
        self.assertEqual(sent["email_to"], ['"Emma Email" <emma@ex.com>'])
        self.assertIn(f"Dear Emma Email, as a {self.gold.name} customer your code is {code}.",
                      sent["body"])  # fmt: skip
        self.assertEqual(sent["subject"], "Emma Email, a gift for you")
        # The recipient's own preference link, signed for them and the campaign's company
        # (tokens carry their expiry: compared by their content).
        base = self.emma.get_base_url()
        links = re.findall(rf'href="{re.escape(base)}/ecrm/preferences/([^"]+)"', sent["body"])
        self.assertEqual(len(links), 1)
        self.assertEqual(
            tools.verify_hash_signed(self.env(su=True), "ecrm_preferences", links[0]),
            {"p": self.emma.id, "c": self.company_a.id},
        )
        self.assertIn("/unsubscribe_oneclick", sent["headers"]["List-Unsubscribe"])
        self.assertEqual(sent["headers"]["List-Unsubscribe-Post"], "List-Unsubscribe=One-Click")
        self.assertIn("/mailing/", sent["body"], "the unsubscribe link is the recipient's")
        self.assertNotIn("unsubscribe_from_list", sent["body"])

    def test_preview_and_test_send(self):
        # A held-out customer first: they get no email, the preview shows a recipient's.
        held = self.env["res.partner"].create({"name": "Hugo Held", "email": "hugo@ex.com"})
        self.segment.domain = repr([("id", "in", (held | self.emma).ids)])
        self.campaign.action_prepare()
        recipients = self.campaign.recipient_ids.sorted("id")
        recipients.filtered(lambda r: r.partner_id == held).write(
            {"group": "holdout", "state": "holdout", "coupon_id": False}
        )
        code = recipients.filtered(lambda r: r.partner_id == self.emma).coupon_code
        action = self.campaign.with_user(self.user_salesman).action_preview_email()
        preview = (
            self.env[action["res_model"]]
            .with_user(self.user_salesman)
            .with_context(action["context"])
            .create({})
        )
        self.assertEqual(preview.partner_id, self.emma, "the first email recipient")
        self.assertEqual(preview.subject, "Emma Email, a gift for you")
        self.assertIn(code, preview.body)
        self.assertIn("Choose what you receive", preview.body)
        preview.email_to = "not an address"
        with self.assertRaises(UserError):
            preview.action_send_test()
        preview.email_to = "me@example.com, boss@example.com"
        with self.mock_mail_gateway():
            preview.action_send_test()
        self.assertEqual(len(self._mails), 1)
        self.assertEqual(set(self._mails[0]["email_to"]), {"me@example.com", "boss@example.com"})
        self.assertIn(code, self._mails[0]["body"])
        self.assertTrue(self._mails[0]["subject"].startswith("[Test]"))
        # Nothing was sent to the customer, and nothing counts as a touch.
        self.assertFalse(self.campaign.contacted_count)

    def test_coupon_placeholder_needs_the_campaign(self):
        """The coupon field reads codes in SQL: only for a campaign the user may read."""
        self.campaign.action_prepare()
        emma = self.emma.with_user(self.user_salesman_b).with_context(
            ecrm_campaign_id=self.campaign.id
        )
        with self.assertRaises(AccessError):
            emma.sudo(False).ecrm_campaign_coupon  # noqa: B018

    def test_code_in_an_email_needs_the_template_editor_right(self):
        """A salesperson's email holds placeholders, never code an administrator would
        later run in the mailing queue by sending the campaign."""
        self.assertFalse(self.user_salesman.has_group("mail.group_mail_template_editor"))
        campaign = self.campaign.with_user(self.user_salesman)
        for body in (
            '<p><t t-out="object.env.user.name"/></p>',
            '<p><t t-out="object.sudo().ecrm_campaign_coupon"/></p>',
        ):
            with self.assertRaises(AccessError):
                campaign.write({"email_body": body})
        with self.assertRaises(AccessError):
            campaign.write({"email_subject": "{{ object.env.cr.dbname }}"})
        campaign.write({"email_body": BODY, "email_subject": "{{ object.name }}"})
        self.assertIn("object.ecrm_campaign_coupon", campaign.email_body)

    def test_salesperson_sends_an_email_campaign(self):
        """Without Email Marketing rights, the campaign's mailing is made and queued."""
        salesman = self.user_salesman
        self.assertFalse(salesman.has_group("mass_mailing.group_mass_mailing_user"))
        campaign = self.campaign.with_user(salesman)
        campaign.action_prepare()
        campaign.action_send()
        mailing = self.campaign.sudo().mailing_ids
        self.assertEqual((mailing.state, mailing.user_id), ("in_queue", self.campaign.user_id))
        with self.mock_mail_gateway():
            mailing.action_send_mail()
        self.assertIn(self.campaign.recipient_ids.coupon_code, self._mails[0]["body"])
