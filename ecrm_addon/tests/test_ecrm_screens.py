import json

from odoo import Command, fields
from odoo.api import call_kw
from odoo.exceptions import UserError
from odoo.tests import new_test_user, tagged, users
from odoo.tools import json_default

from .common import EcrmCommon


def as_web_client(action):
    """The action as the browser receives it: through JSON."""
    return json.loads(json.dumps(action, default=json_default))


@tagged("post_install", "-at_install", "ecrm")
class TestEcrmScreens(EcrmCommon):
    """What the screens' buttons return works once it has travelled to the browser."""

    @users("ecrm_salesman")
    def test_segment_customers_button(self):
        """Segments > "N Customers": the action's domain survives JSON and finds them."""
        segment = self.env["ecrm.segment"].create(
            {
                "name": "Carla and co",
                "company_id": self.company_a.id,
                "domain": repr([("email", "=ilike", "carla@example.com")]),
            }
        )
        action = as_web_client(call_kw(segment.browse(), "action_preview", [segment.ids], {}))
        partners = (
            self.env[action["res_model"]].with_context(**action["context"]).search(action["domain"])
        )
        self.assertEqual(partners, self.customer)
        self.assertEqual(segment.partner_count, 1)


@tagged("post_install", "-at_install", "ecrm")
class TestEcrmApiAccessScreens(EcrmCommon):
    """Configuration > API Access: the keys an administrator makes, sees and revokes."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.manager_a = new_test_user(
            cls.env,
            login="ecrm_manager_a",
            name="Ada Admin A",
            groups="sales_team.group_sale_manager,ecrm_addon.group_ecrm_manager",
            company_id=cls.company_a.id,
            company_ids=[Command.set(cls.company_a.ids)],
        )
        groups = cls.env.ref("base.group_portal") | cls.env.ref("ecrm_addon.group_ecrm_ingest")
        cls.api_user_a = new_test_user(
            cls.env,
            login="ecrm_api_a",
            name="Telephony A",
            groups="base.group_portal,ecrm_addon.group_ecrm_ingest",
            company_id=cls.company_a.id,
            company_ids=[Command.set(cls.company_a.ids)],
        )
        cls.api_user_ab = new_test_user(
            cls.env,
            login="ecrm_api_ab",
            name="Shop A and B",
            groups="base.group_portal,ecrm_addon.group_ecrm_ingest",
            company_id=cls.company_a.id,
            company_ids=[Command.set((cls.company_a | cls.company_b).ids)],
        )
        assert cls.api_user_ab.groups_id >= groups

    def _wizard(self, user):
        return (
            self.env["ecrm.api.access.wizard"]
            .with_user(self.manager_a)
            .create({"user_id": user.id, "key_name": "Test key"})
        )

    def _key_ids(self, user):
        return self.env["res.users.apikeys"].sudo().search([("user_id", "=", user.id)]).ids

    def test_key_for_user_of_another_company_refused(self):
        """A company-A administrator makes no key for an API user who may push into B."""
        with self.assertRaisesRegex(UserError, "e-CRM Test Company B"):
            self._wizard(self.api_user_ab).action_create()
        self.assertFalse(self._key_ids(self.api_user_ab))

    def test_key_shown_with_endpoint_and_example(self):
        action = as_web_client(self._wizard(self.api_user_a).action_create())
        self.assertEqual(action["res_model"], "ecrm.api.key.show")
        context = action["context"]
        self.assertTrue(context["default_key"])
        self.assertTrue(context["default_endpoint"].endswith("/ecrm/api/v1/interactions"))
        self.assertIn(f"Bearer {context['default_key']}", context["default_example"])
        self.assertEqual(context["default_user_name"], "Telephony A")
        self.assertEqual(context["default_company_names"], self.company_a.name)
        self.assertEqual(len(self._key_ids(self.api_user_a)), 1)
        # the dialog opens (its defaults come from the context, nothing is stored)
        show = self.env["ecrm.api.key.show"].with_user(self.manager_a).with_context(**context)
        values = show.default_get(["key", "endpoint"])
        self.assertEqual(values["key"], context["default_key"])

    def test_keys_listed_and_revoked(self):
        for user in self.api_user_a | self.api_user_ab:
            self.env["res.users.apikeys"].with_user(user).sudo()._generate(
                "rpc", f"{user.name} key", fields.Datetime.add(fields.Datetime.now(), days=30)
            )
        api_users = self.api_user_a | self.api_user_ab
        keys = (
            self.env["ecrm.api.key"]
            .with_user(self.manager_a)
            .search([("user_id", "in", api_users.ids)])
        )
        self.assertEqual(keys.user_id, self.api_user_a, "not the key of the A+B user")
        self.assertEqual(keys.expiration_date.date(), fields.Date.add(fields.Date.today(), days=30))
        keys.action_revoke()
        self.assertFalse(self._key_ids(self.api_user_a))
        key_ab = (
            self.env["ecrm.api.key"]
            .with_user(self.manager_a)
            .browse(self._key_ids(self.api_user_ab))
        )
        with self.assertRaises(UserError):
            key_ab.action_revoke()
        self.assertTrue(self._key_ids(self.api_user_ab))


@tagged("post_install", "-at_install", "ecrm")
class TestEcrmCustomerGlance(EcrmCommon):
    """The customer form and the sales order show the customer at a glance."""

    @users("ecrm_salesman")
    def test_glance_on_customer_and_order(self):
        segment = self.env.ref("ecrm_addon.ecrm_rfm_segment_at_risk", raise_if_not_found=False)
        segment = segment or self.env["ecrm.rfm.segment"].search([], limit=1)
        self.env["ecrm.customer.score"].sudo().create(
            {
                "partner_id": self.customer.id,
                "company_id": self.company_a.id,
                "segment_id": segment.id,
                "churn_risk": 0.8,
                "clv": 1234.0,
            }
        )
        order = self._create_order(self.customer, confirm=False, user_id=self.user_salesman.id)
        order = order.with_env(self.env)
        self.assertEqual(order.ecrm_partner_segment_id, segment)
        self.assertEqual(order.ecrm_partner_churn_risk, 0.8)
        self.assertEqual(order.ecrm_partner_clv, 1234.0)
        for model in ("res.partner", "sale.order"):
            arch = self.env[model].get_views([(False, "form")])["views"]["form"]["arch"]
            self.assertIn('name="ecrm_glance"', arch, f"the {model} form has the glance row")

    def test_customer_scored_in_another_company_says_so(self):
        """The manager works in A and B; a customer scored in B only says so in A, and
        a salesperson of A only is never told about B."""
        self.env["ecrm.customer.score"].create(
            {"partner_id": self.customer.id, "company_id": self.company_b.id, "clv": 10.0}
        )
        in_a = self.customer.with_user(self.user_manager).with_context(
            allowed_company_ids=self.company_a.ids
        )
        self.assertFalse(in_a.ecrm_score_id)
        self.assertEqual(in_a.ecrm_scored_elsewhere, self.company_b.name)
        in_b = self.customer.with_user(self.user_manager).with_context(
            allowed_company_ids=self.company_b.ids
        )
        self.assertTrue(in_b.ecrm_score_id)
        self.assertFalse(in_b.ecrm_scored_elsewhere)
        self.assertFalse(self.customer.with_user(self.user_salesman).ecrm_scored_elsewhere)
        arch = self.env["res.partner"].get_views([(False, "form")])["views"]["form"]["arch"]
        self.assertIn('name="ecrm_scored_elsewhere"', arch)
