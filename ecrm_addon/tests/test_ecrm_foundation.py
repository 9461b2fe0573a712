from odoo.exceptions import AccessError
from odoo.tests import Form, tagged, users

from .common import EcrmCommon


@tagged("post_install", "-at_install", "ecrm")
class TestEcrmFoundation(EcrmCommon):
    def test_groups_imply_sales_groups(self):
        ecrm_user = self.env.ref("ecrm_addon.group_ecrm_user")
        ecrm_manager = self.env.ref("ecrm_addon.group_ecrm_manager")
        self.assertIn(self.env.ref("sales_team.group_sale_salesman"), ecrm_user.trans_implied_ids)
        self.assertIn(ecrm_user, ecrm_manager.implied_ids)
        self.assertIn(self.env.ref("sales_team.group_sale_manager"), ecrm_manager.trans_implied_ids)
        self.assertTrue(self.user_salesman.has_group("sales_team.group_sale_salesman"))
        self.assertFalse(self.user_salesman.has_group("ecrm_addon.group_ecrm_manager"))

    def _visible_menu_xmlids(self, user):
        menus = self.env["ir.ui.menu"].with_user(user)._visible_menu_ids()
        return set(self.env["ir.ui.menu"].browse(menus).get_external_id().values())

    def test_menu_visibility(self):
        salesman_menus = self._visible_menu_xmlids(self.user_salesman)
        self.assertIn("ecrm_addon.ecrm_menu_root", salesman_menus)
        self.assertIn("ecrm_addon.ecrm_menu_customers_customers", salesman_menus)
        self.assertNotIn("ecrm_addon.ecrm_menu_config", salesman_menus)
        self.assertNotIn("ecrm_addon.ecrm_menu_root", self._visible_menu_xmlids(self.user_employee))
        admin_menus = self._visible_menu_xmlids(self.env.ref("base.user_admin"))
        self.assertIn("ecrm_addon.ecrm_menu_config_settings", admin_menus)

    def test_settings_form_opens(self):
        settings = Form(self.env["res.config.settings"])
        settings.save()
        arch = self.env["res.config.settings"].get_views([(False, "form")])["views"]["form"]["arch"]
        self.assertIn('name="ecrm_addon"', arch)

    @users("ecrm_salesman")
    def test_salesman_cannot_open_settings(self):
        with self.assertRaises(AccessError):
            self.env["res.config.settings"].create({})

    def test_customer_action_lists_customers(self):
        action = self.env.ref("ecrm_addon.ecrm_partner_action")
        self.assertEqual(action.res_model, "res.partner")
        partners = (
            self.env["res.partner"]
            .with_user(self.user_salesman)
            .search([("customer_rank", ">", 0)])
        )
        self.assertIn(self.customer, partners)
        self.assertNotIn(self.customer_b, partners, "company B's customer is hidden in company A")


@tagged("post_install", "-at_install", "ecrm")
class TestEcrmDemoData(EcrmCommon):
    """The demo business must look real: two companies, two currencies, years of orders."""

    def setUp(self):
        super().setUp()
        self.europe = self.env["res.company"].search([("name", "=", "Brewline Europe GmbH")])
        if not self.europe:
            self.fail("ecrm_addon demo data is not loaded: the test database must have demo data")

    def test_demo_business(self):
        europe = self.europe
        customers = self.env["res.partner"].search([("ref", "=like", "ECRM%")])
        self.assertEqual(len(customers), 200)
        groups = self.env["sale.order"]._read_group(
            [("partner_id", "in", customers.ids), ("state", "=", "sale")],
            ["partner_id"],
            ["__count", "date_order:min", "date_order:max", "amount_total:sum"],
        )
        self.assertGreaterEqual(len(groups), 190, "nearly every customer bought something")
        counts = sorted(count for _partner, count, _first, _last, _total in groups)
        self.assertEqual(counts[0], 1, "some customers bought only once")
        self.assertGreaterEqual(counts[-1], 15, "some customers buy often")
        firsts = [first for _p, _c, first, _l, _t in groups]
        lasts = [last for _p, _c, _f, last, _t in groups]
        self.assertGreater((max(lasts) - min(firsts)).days, 2.5 * 365, "three years of history")
        self.assertTrue(any((max(lasts) - last).days > 365 for last in lasts), "lost customers")
        orders = self.env["sale.order"].search([("partner_id", "in", customers.ids)])
        self.assertEqual(set(orders.company_id.ids), {self.company_a.id, europe.id})
        self.assertGreaterEqual(len(orders.currency_id), 2, "orders in two currencies")
        self.assertIn("cancel", orders.mapped("state"))
        companies_per_customer = self.env["sale.order"]._read_group(
            [("partner_id", "in", customers.ids)], ["partner_id"], ["company_id:count_distinct"]
        )
        self.assertIn(2, {count for _partner, count in companies_per_customer})
