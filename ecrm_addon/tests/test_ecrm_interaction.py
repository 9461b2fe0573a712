from datetime import timedelta

from psycopg2 import IntegrityError

from odoo import fields
from odoo.exceptions import AccessError, ValidationError
from odoo.tests import Form, tagged, users
from odoo.tools import mute_logger

from odoo.addons.mail.tests.common import MockEmail
from odoo.addons.sms.tests.common import MockSMS

from .common import EcrmCommon


class EcrmInteractionCommon(EcrmCommon):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.Interaction = cls.env["ecrm.interaction"]
        cls.channel_email = cls.env.ref("ecrm_addon.ecrm_channel_email")
        cls.channel_phone = cls.env.ref("ecrm_addon.ecrm_channel_phone")
        cls.channel_web = cls.env.ref("ecrm_addon.ecrm_channel_web")
        cls.channel_sms = cls.env.ref("ecrm_addon.ecrm_channel_sms")
        cls.channel_chat = cls.env.ref("ecrm_addon.ecrm_channel_chat")
        cls.customer_company = cls.env["res.partner"].create(
            {"name": "Acme Bikes", "is_company": True, "email": "info@acme.example.com"}
        )
        cls.contact_1 = cls.env["res.partner"].create(
            {
                "name": "Ann Acme",
                "parent_id": cls.customer_company.id,
                "email": "ann@acme.example.com",
            }
        )
        cls.contact_2 = cls.env["res.partner"].create(
            {
                "name": "Bob Acme",
                "parent_id": cls.customer_company.id,
                "email": "bob@acme.example.com",
            }
        )

    def _interactions(self, partner, **domain):
        return self.Interaction.search(
            [("commercial_partner_id", "=", partner.commercial_partner_id.id)]
            + [(key, "=", value) for key, value in domain.items()]
        )

    def _log(self, partner, channel=None, company=None, **vals):
        return self.Interaction.create(
            {
                "partner_id": partner.id,
                "channel_id": (channel or self.channel_phone).id,
                "company_id": (company or self.company_a).id,
                **vals,
            }
        )


@tagged("post_install", "-at_install", "ecrm")
class TestEcrmInteractionModel(EcrmInteractionCommon):
    def test_channels_shipped(self):
        codes = set(self.env["ecrm.channel"].search([]).mapped("code"))
        self.assertLessEqual(
            {"email", "phone", "fax", "web", "chat", "sms", "social", "in_person", "letter"}, codes
        )
        self.assertTrue(self.channel_email.is_electronic)
        self.assertFalse(self.channel_phone.is_electronic)
        self.assertEqual(self.channel_email.medium_id, self.env.ref("utm.utm_medium_email"))

    def test_channel_cost_per_company(self):
        self.channel_phone.with_company(self.company_a).cost_per_contact = 3.0
        self.channel_phone.with_company(self.company_b).cost_per_contact = 7.0
        self.assertEqual(self.channel_phone.with_company(self.company_a).cost_per_contact, 3.0)
        self.assertEqual(self.channel_phone.with_company(self.company_b).cost_per_contact, 7.0)

    def test_channel_code_unique_and_clean(self):
        with self.assertRaises(ValidationError):
            self.env["ecrm.channel"].create({"name": "Bad", "code": "Bad Code"})
        with self.assertRaises(IntegrityError), mute_logger("odoo.sql_db"), self.cr.savepoint():
            self.env["ecrm.channel"].create({"name": "Email again", "code": "email"})

    def test_validation_errors(self):
        with self.assertRaisesRegex(ValidationError, "in the future"):
            self._log(self.customer, date=fields.Datetime.now() + timedelta(days=2))
        # A few minutes ahead is tolerated (clocks of outside systems differ).
        self._log(self.customer, date=fields.Datetime.now() + timedelta(minutes=5))
        channel_b = self.env["ecrm.channel"].create(
            {"name": "B hotline", "code": "b_hotline", "company_id": self.company_b.id}
        )
        with self.assertRaisesRegex(ValidationError, "B hotline"):
            self._log(self.customer, channel=channel_b, company=self.company_a)
        with self.assertRaisesRegex(ValidationError, "needs a customer"):
            self.Interaction.create({"channel_id": self.channel_phone.id})
        with self.assertRaises(ValidationError):
            self._log(self.customer, duration=-1)

    def test_summary_is_sanitized(self):
        interaction = self._log(self.customer, summary="<p>Hello<script>alert(1)</script></p>")
        self.assertNotIn("<script", interaction.summary)
        self.assertIn("Hello", interaction.summary)

    def test_external_ref_unique_per_system_and_company(self):
        self._log(self.customer, source_system="pbx", external_ref="call-1")
        self._log(self.customer, source_system="chat", external_ref="call-1")
        self._log(
            self.customer_b, company=self.company_b, source_system="pbx", external_ref="call-1"
        )
        with self.assertRaises(IntegrityError), mute_logger("odoo.sql_db"), self.cr.savepoint():
            self._log(self.customer, source_system="pbx", external_ref="call-1")
            self.env.flush_all()


@tagged("post_install", "-at_install", "ecrm")
class TestEcrmInteractionAccess(EcrmInteractionCommon):
    @users("ecrm_salesman")
    def test_salesman_logs_from_customer(self):
        customer = self.customer.with_user(self.env.user)
        action = customer.action_ecrm_log_interaction()
        self.assertEqual(action["target"], "new")
        form = Form(
            self.env["ecrm.interaction"].with_context(**action["context"]),
            view="ecrm_addon.ecrm_interaction_view_form_log",
        )
        form.direction = "inbound"
        form.subject = "Called about a late delivery"
        form.duration = 0.25
        form.outcome = "follow_up"
        interaction = form.save()
        self.assertEqual(interaction.partner_id, self.customer)
        self.assertEqual(interaction.channel_id, self.channel_phone)
        self.assertEqual(interaction.capture_mode, "manual")
        self.assertEqual(interaction.company_id, self.company_a)
        self.assertEqual(interaction.user_id, self.user_salesman)
        self.assertEqual(interaction.source_ref, self.customer)
        interaction.outcome = "done"  # their own manual interaction: allowed
        with self.assertRaises(AccessError):
            interaction.unlink()

    def test_salesman_cannot_edit_captured_or_others(self):
        order = self._create_order(self.customer)
        captured = self._interactions(self.customer, sale_order_id=order.id)
        self.assertEqual(len(captured), 1)
        other = self._log(self.customer, subject="Logged by the manager")
        for record in (captured, other):
            with self.assertRaises(AccessError):
                record.with_user(self.user_salesman).write({"outcome": "done"})
        with self.assertRaises(AccessError):
            self.Interaction.with_user(self.user_salesman).create(
                {
                    "partner_id": self.customer.id,
                    "channel_id": self.channel_phone.id,
                    "capture_mode": "automatic",
                }
            )
        # Managers correct and delete captured interactions.
        captured.with_user(self.user_manager).write({"outcome": "done"})
        captured.with_user(self.user_manager).unlink()
        self.assertFalse(captured.exists())

    def test_company_isolation(self):
        mine = self._log(self.customer)
        theirs = self._log(self.customer, company=self.company_b, subject="B's call")
        shared_in_b = self._log(self.customer_b, company=self.company_b)
        visible = self.Interaction.with_user(self.user_salesman).search([])
        self.assertIn(mine, visible)
        self.assertNotIn(theirs, visible)
        self.assertNotIn(shared_in_b, visible)
        with self.assertRaises(AccessError):
            theirs.with_user(self.user_salesman).read(["subject"])
        with self.assertRaises(AccessError):
            self.Interaction.with_user(self.user_salesman).create(
                {
                    "partner_id": self.customer.id,
                    "channel_id": self.channel_phone.id,
                    "company_id": self.company_b.id,
                }
            )
        self.assertIn(theirs, self.Interaction.with_user(self.user_salesman_b).search([]))

    def test_user_without_ecrm_group(self):
        with self.assertRaises(AccessError):
            self.Interaction.with_user(self.user_employee).search([])
        # The customer form still opens for people outside e-CRM.
        self.customer.with_user(self.user_salesman).read(["name"])

    def test_views_load(self):
        for view_type in ("list", "kanban", "calendar", "pivot", "graph", "form", "search"):
            views = self.Interaction.with_user(self.user_salesman).get_views([(False, view_type)])
            self.assertTrue(views["views"][view_type]["arch"])
        partner_form = (
            self.env["res.partner"].with_user(self.user_salesman).get_views([(False, "form")])
        )
        self.assertIn("ecrm_timeline_ids", partner_form["views"]["form"]["arch"])
        employee_form = (
            self.env["res.partner"].with_user(self.user_employee).get_views([(False, "form")])
        )
        self.assertNotIn("ecrm_timeline_ids", employee_form["views"]["form"]["arch"])
        with Form(self.customer.with_user(self.user_salesman)) as form:
            self.assertEqual(form.ecrm_interaction_count, 0)
        order = self._create_order(self.customer, user_id=self.user_salesman.id)
        with Form(order.with_user(self.user_salesman)) as form:
            self.assertEqual(form.ecrm_interaction_count, 1)


@tagged("post_install", "-at_install", "ecrm")
class TestEcrmCaptureOrders(EcrmInteractionCommon):
    def test_confirmation_logged_once(self):
        order = self._create_order(self.contact_1, team_id=self.team_a.id)
        logged = self._interactions(self.customer_company, sale_order_id=order.id)
        self.assertEqual(len(logged), 1)
        self.assertEqual(logged.direction, "inbound")
        self.assertEqual(logged.capture_mode, "automatic")
        self.assertEqual(logged.outcome, "ordered")
        self.assertEqual(logged.res_model, "sale.order")
        self.assertEqual(logged.date, order.date_order)
        self.assertEqual(logged.commercial_partner_id, self.customer_company)
        self.assertEqual(order.ecrm_interaction_count, 1)
        self.assertEqual(
            order.action_ecrm_view_interactions()["domain"], [("sale_order_id", "=", order.id)]
        )
        # Cancel and confirm again: still one interaction.
        order._action_cancel()
        order.action_draft()
        order.action_confirm()
        self.assertEqual(len(self._interactions(self.customer_company, sale_order_id=order.id)), 1)

    def test_confirmation_channel(self):
        self.assertEqual(
            self._interactions(
                self.customer, sale_order_id=self._create_order(self.customer).id
            ).channel_id,
            self.channel_phone,
            "phone is the last resort",
        )
        self.company_a.ecrm_order_channel_id = self.channel_chat
        order = self._create_order(self.customer)
        self.assertEqual(
            self._interactions(self.customer, sale_order_id=order.id).channel_id, self.channel_chat
        )
        self.team_a.ecrm_channel_id = self.channel_email
        order = self._create_order(self.customer, team_id=self.team_a.id)
        self.assertEqual(
            self._interactions(self.customer, sale_order_id=order.id).channel_id, self.channel_email
        )
        order = self._create_order(
            self.customer,
            team_id=self.team_a.id,
            medium_id=self.env.ref("utm.utm_medium_website").id,
        )
        self.assertEqual(
            self._interactions(self.customer, sale_order_id=order.id).channel_id, self.channel_web
        )

    def test_portal_confirmation_is_web(self):
        order = self._create_order(self.customer, confirm=False)
        portal_user = self.env["res.users"].create(
            {
                "name": "Carla Portal",
                "login": "carla_portal",
                "partner_id": self.customer.id,
                "groups_id": [(6, 0, [self.env.ref("base.group_portal").id])],
            }
        )
        order.with_user(portal_user).sudo().action_confirm()
        self.assertEqual(
            self._interactions(self.customer, sale_order_id=order.id).channel_id, self.channel_web
        )

    def test_batch_confirmation_and_company(self):
        orders = self._create_order(self.customer, confirm=False) | self._create_order(
            self.customer_b, company=self.company_b, confirm=False
        )
        orders.action_confirm()
        logged = self.Interaction.search([("sale_order_id", "in", orders.ids)])
        self.assertEqual(len(logged), 2)
        self.assertEqual(
            {(i.sale_order_id.id, i.company_id.id) for i in logged},
            {(order.id, order.company_id.id) for order in orders},
        )

    def test_capture_switch(self):
        self.company_a.ecrm_capture_order = False
        order = self._create_order(self.customer)
        self.assertFalse(self._interactions(self.customer, sale_order_id=order.id))


@tagged("post_install", "-at_install", "ecrm")
class TestEcrmCaptureMessages(EcrmInteractionCommon, MockEmail):
    def test_message_to_customer_logged_once_per_customer(self):
        order = self._create_order(self.contact_1, confirm=False, user_id=self.user_salesman.id)
        with self.mock_mail_gateway():
            message = order.with_user(self.user_salesman).message_post(
                body="<p>Your quotation is ready</p>",
                subject="Quotation",
                message_type="comment",
                subtype_xmlid="mail.mt_comment",
                partner_ids=(self.contact_1 | self.contact_2 | self.customer).ids,
            )
        logged = self.Interaction.search(
            [("res_model", "=", "mail.message"), ("res_id", "=", message.id)]
        )
        self.assertEqual(len(logged), 2, "one per customer: Acme (two contacts) and Carla")
        self.assertEqual(
            set(logged.commercial_partner_id.ids), {self.customer_company.id, self.customer.id}
        )
        self.assertEqual(set(logged.mapped("direction")), {"outbound"})
        self.assertEqual(logged.channel_id, self.channel_email)
        self.assertEqual(logged.sale_order_id, order)
        self.assertEqual(logged.user_id, self.user_salesman)
        self.assertIn("quotation is ready", logged[0].summary)

    def test_notes_and_notifications_not_logged(self):
        before = self.Interaction.search_count([])
        self.customer.message_post(body="Internal: bad payer", subtype_xmlid="mail.mt_note")
        self.customer.message_post(
            body="Internal comment",
            message_type="comment",
            subtype_xmlid="mail.mt_note",
            partner_ids=self.customer.ids,
        )
        self.customer.message_post(body="System", message_type="notification")
        self.customer.message_post(
            body="To a colleague",
            message_type="comment",
            subtype_xmlid="mail.mt_comment",
            partner_ids=self.user_salesman.partner_id.ids,
        )
        self.assertEqual(self.Interaction.search_count([]), before)

    def test_incoming_email_logged_inbound(self):
        order = self._create_order(self.customer, confirm=False)
        with self.mock_mail_gateway():
            self.env["mail.thread"].message_process(
                "sale.order",
                self._ecrm_raw_email(self.customer.email, "About my quotation"),
                thread_id=order.id,
            )
        logged = self._interactions(
            self.customer, direction="inbound", channel_id=self.channel_email.id
        )
        self.assertEqual(len(logged), 1)
        self.assertEqual(logged.subject, "About my quotation")
        self.assertEqual(logged.sale_order_id, order)
        self.assertEqual(logged.res_model, "mail.message")

    def _ecrm_raw_email(self, email_from, subject):
        return (
            f"From: {email_from}\r\nTo: quotes@example.com\r\nSubject: {subject}\r\n"
            "Message-ID: <ecrm-test-1@example.com>\r\nContent-Type: text/plain\r\n\r\n"
            "Can I change the colour?\r\n"
        )

    def test_portal_message_is_web_inbound(self):
        order = self._create_order(self.customer, confirm=False)
        order.message_post(
            body="Please deliver on Monday",
            message_type="comment",
            subtype_xmlid="mail.mt_comment",
            author_id=self.customer.id,
        )
        logged = self._interactions(self.customer, res_model="mail.message")
        self.assertEqual(logged.direction, "inbound")
        self.assertEqual(logged.channel_id, self.channel_web)

    def test_capture_switch(self):
        self.company_a.ecrm_capture_email = False
        self.customer.message_post(
            body="Hello",
            message_type="comment",
            subtype_xmlid="mail.mt_comment",
            partner_ids=self.customer.ids,
        )
        self.assertFalse(self._interactions(self.customer))


@tagged("post_install", "-at_install", "ecrm")
class TestEcrmCaptureMailingSmsCalls(EcrmInteractionCommon, MockEmail, MockSMS):
    def test_mailing_traces(self):
        campaign = self.env["utm.campaign"].create({"name": "Spring sale"})
        mailing = self.env["mailing.mailing"].create(
            {
                "name": "Spring",
                "subject": "Spring offers",
                "body_html": "<p>Hello</p>",
                "mailing_model_id": self.env["ir.model"]._get_id("res.partner"),
                "mailing_domain": [("id", "in", (self.customer | self.contact_1).ids)],
                "campaign_id": campaign.id,
            }
        )
        with self.mock_mail_gateway(mail_unlink_sent=False):
            mailing.action_send_mail()
        traces = mailing.mailing_trace_ids
        self.assertEqual(len(traces), 2)
        logged = self.Interaction.search(
            [("res_model", "=", "mailing.trace"), ("res_id", "in", traces.ids)]
        )
        self.assertEqual(len(logged), 2)
        self.assertEqual(logged.campaign_id, campaign)
        self.assertEqual(set(logged.mapped("direction")), {"outbound"})
        self.assertEqual(logged.channel_id, self.channel_email)
        trace = traces.filtered(lambda t: t.res_id == self.customer.id)
        interaction = logged.filtered(lambda i: i.partner_id == self.customer)
        trace.set_opened()
        self.assertEqual(interaction.outcome, "opened")
        trace.set_clicked()
        self.assertEqual(interaction.outcome, "clicked")
        trace.set_opened()
        self.assertEqual(interaction.outcome, "clicked", "an outcome never moves back")
        trace.set_replied()
        self.assertEqual(interaction.outcome, "replied")
        other = logged - interaction
        traces.filtered(lambda t: t.res_id == self.contact_1.id).set_bounced()
        self.assertEqual(other.outcome, "bounced")

    def test_mailing_contact_matched_by_email(self):
        mailing = self.env["mailing.mailing"].create(
            {
                "name": "List",
                "subject": "News",
                "body_html": "<p>News</p>",
                "mailing_model_id": self.env["ir.model"]._get_id("mailing.contact"),
            }
        )
        contact = self.env["mailing.contact"].create(
            {"name": "Carla", "email": "carla@example.com"}
        )
        self.env["mailing.trace"].create(
            {
                "mass_mailing_id": mailing.id,
                "model": "mailing.contact",
                "res_id": contact.id,
                "email": "carla@example.com",
                "trace_status": "sent",
            }
        )
        self.assertEqual(len(self._interactions(self.customer, res_model="mailing.trace")), 1)

    def test_sms_from_document(self):
        self.customer.phone = "+32456001122"
        order = self._create_order(self.customer, confirm=False)
        with self.mockSMSGateway():
            order._message_sms("Your order is ready", partner_ids=self.customer.ids)
        logged = self._interactions(self.customer, channel_id=self.channel_sms.id)
        self.assertEqual(len(logged), 1)
        self.assertEqual(logged.direction, "outbound")
        self.assertEqual(logged.sale_order_id, order)

    def test_call_activity_done(self):
        activity = self.customer.activity_schedule(
            "mail.mail_activity_data_call", summary="Renewal call", user_id=self.user_salesman.id
        )
        todo = self.customer.activity_schedule("mail.mail_activity_data_todo", summary="Send docs")
        activity.with_user(self.user_salesman).action_feedback(feedback="Will renew next month")
        todo.action_feedback(feedback="Done")
        logged = self._interactions(self.customer, channel_id=self.channel_phone.id)
        self.assertEqual(len(logged), 1)
        self.assertEqual(logged.subject, "Renewal call")
        self.assertIn("renew next month", logged.summary)
        self.assertEqual(logged.user_id, self.user_salesman)
        self.assertEqual(
            self.Interaction.search_count([("commercial_partner_id", "=", self.customer.id)]), 1
        )


@tagged("post_install", "-at_install", "ecrm")
class TestEcrmPartnerFigures(EcrmInteractionCommon):
    def test_figures_roll_up_and_follow_company(self):
        now = fields.Datetime.now()
        self._log(
            self.contact_1,
            channel=self.channel_email,
            direction="inbound",
            date=now - timedelta(days=200),
        )
        self._log(
            self.contact_2,
            channel=self.channel_chat,
            direction="inbound",
            date=now - timedelta(days=10),
        )
        self._log(
            self.contact_2,
            channel=self.channel_chat,
            direction="inbound",
            date=now - timedelta(days=20),
        )
        self._log(
            self.contact_1,
            channel=self.channel_phone,
            direction="outbound",
            date=now - timedelta(days=3),
        )
        self._log(self.contact_1, company=self.company_b, date=now - timedelta(days=1))
        for partner in (self.customer_company, self.contact_1):
            partner.invalidate_recordset()
            self.assertEqual(partner.ecrm_interaction_count, 4)
            self.assertEqual(partner.ecrm_interaction_count_recent, 3)
            self.assertEqual(partner.ecrm_days_since_contact, 3)
            self.assertEqual(partner.ecrm_preferred_channel_id, self.channel_chat)
        in_b = self.customer_company.with_company(self.company_b)
        self.assertEqual(in_b.ecrm_interaction_count, 1)
        self.assertEqual(in_b.ecrm_days_since_contact, 1)
        self.assertFalse(in_b.ecrm_preferred_channel_id)
        self.assertFalse(self.customer.ecrm_last_contact_date)

    def test_figures_searchable(self):
        now = fields.Datetime.now()
        self._log(
            self.customer,
            channel=self.channel_email,
            direction="inbound",
            date=now - timedelta(days=100),
        )
        self._log(
            self.contact_1,
            channel=self.channel_chat,
            direction="inbound",
            date=now - timedelta(days=5),
        )
        Partner = self.env["res.partner"].with_user(self.user_salesman)
        ids = {
            self.customer.id,
            self.customer_company.id,
            self.contact_1.id,
            self.contact_2.id,
            self.customer_b.id,
        }

        def search(domain):
            return set(Partner.search([*domain, ("id", "in", list(ids))]).ids)

        acme = {self.customer_company.id, self.contact_1.id, self.contact_2.id}
        self.assertEqual(search([("ecrm_days_since_contact", ">", 90)]), {self.customer.id})
        self.assertEqual(search([("ecrm_days_since_contact", "<=", 30)]), acme)
        self.assertEqual(search([("ecrm_last_contact_date", "=", False)]), set())
        self.assertEqual(search([("ecrm_interaction_count_recent", ">=", 1)]), acme)
        self.assertEqual(search([("ecrm_interaction_count_recent", "=", 0)]), {self.customer.id})
        self.assertEqual(
            search([("ecrm_preferred_channel_id", "=", self.channel_email.id)]), {self.customer.id}
        )
        self.assertEqual(search([("ecrm_preferred_channel_id", "=", "Chat")]), acme)
        action = self.customer.action_ecrm_view_interactions()
        self.assertEqual(action["domain"], [("commercial_partner_id", "=", self.customer.id)])

    def test_timeline_newest_first_current_company(self):
        now = fields.Datetime.now()
        self.Interaction.create(
            [
                {
                    "partner_id": self.contact_1.id,
                    "channel_id": self.channel_phone.id,
                    "company_id": self.company_a.id,
                    "date": now - timedelta(hours=index),
                    "subject": f"Call {index}",
                }
                for index in range(50)
            ]
        )
        self._log(self.contact_1, company=self.company_b, subject="In B")
        timeline = self.customer_company.with_user(self.user_salesman).ecrm_timeline_ids
        self.assertEqual(len(timeline), 20, "one page: no pager counting 40 of more")
        self.assertEqual(timeline[0].subject, "Call 0")
        self.assertEqual(timeline.mapped("date"), sorted(timeline.mapped("date"), reverse=True))
        self.assertNotIn("In B", timeline.mapped("subject"))
        self.assertEqual(self.contact_2.ecrm_timeline_ids, timeline, "rolled up to the company")
