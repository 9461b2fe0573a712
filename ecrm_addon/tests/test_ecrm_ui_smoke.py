import json
import logging
import os

from odoo import Command
from odoo.tests import HttpCase, new_test_user, tagged

_logger = logging.getLogger(__name__)

# Buttons the smoke test never presses: they send, delete, cancel, print or leave the page.
EXCLUDED_BUTTONS = (
    r"send|unlink|delete|remove|cancel|archive|print|^action_preview_sale_order$|portal|"
    r"merge|^execute$|website|revoke"
)


@tagged("post_install", "-at_install", "ecrm")
class TestEcrmUiSmoke(HttpCase):
    """Every screen of the e-CRM app works for an administrator and a salesperson.

    The menus, their actions and view types are read from the database for each user, so a
    new menu, view or button is covered without changing the test. In the browser
    (static/tests/tours/ecrm_ui_smoke.js) each menu's views are opened, the form of the
    first record too, and its header and stat buttons pressed (but those that send or
    delete); any error dialog or crashed view fails the test.
    """

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.company_a = cls.env.ref("base.main_company")
        cls.company_b = cls.env["res.company"].create({"name": "e-CRM Smoke Company B"})
        cls.admin = cls.env.ref("base.user_admin")
        cls.admin.company_ids = [Command.link(cls.company_b.id)]
        cls.salesman = new_test_user(
            cls.env,
            login="ecrm_smoke_salesman",
            name="Sally Smoke",
            email="sally.smoke@example.com",
            groups="sales_team.group_sale_salesman,ecrm_addon.group_ecrm_user",
            company_id=cls.company_a.id,
            company_ids=[Command.set(cls.company_a.ids)],
        )
        # A draft campaign of company A: its form, Prepare and stat buttons are pressed.
        segment = cls.env["ecrm.segment"].create(
            {"name": "Smoke segment", "company_id": cls.company_a.id, "domain": "[]"}
        )
        cls.env["ecrm.campaign"].create(
            {
                "name": "Smoke draft campaign",
                "company_id": cls.company_a.id,
                "segment_id": segment.id,
                "channel_line_ids": [
                    Command.create({"channel_id": cls.env.ref("ecrm_addon.ecrm_channel_phone").id})
                ],
            }
        )
        # An order of the salesperson: the sales order form and its e-CRM buttons.
        customer = cls.env["res.partner"].create(
            {"name": "Smoke A Customer", "email": "smoke.a@example.com", "customer_rank": 1}
        )
        product = cls.env["product.product"].create({"name": "Smoke Product", "list_price": 10})
        order = cls.env["sale.order"].create(
            {
                "partner_id": customer.id,
                "company_id": cls.company_a.id,
                "user_id": cls.salesman.id,
                "order_line": [Command.create({"product_id": product.id})],
            }
        )
        order.action_confirm()
        # Something of company B the salesperson must not trip over.
        cls.env["res.partner"].create(
            {"name": "Smoke B Customer", "customer_rank": 1, "company_id": cls.company_b.id}
        )

    def _menu_plan(self, user, role):
        """The e-CRM menus the user sees, each with its action and view types."""
        menus = self.env["ir.ui.menu"].with_user(user).load_menus(False)
        root = self.env.ref("ecrm_addon.ecrm_menu_root")
        self.assertIn(root.id, menus, f"{role} does not see the e-CRM app")
        plan = []

        def walk(menu_id, path):
            menu = menus[menu_id]
            name = " / ".join([*path, menu["name"]])
            if menu.get("action"):
                model, action_id = menu["action"].split(",")
                action = self.env[model].browse(int(action_id))
                view_types = []
                if model == "ir.actions.act_window":
                    view_types = action.view_mode.split(",")
                plan.append({"path": name, "action_id": action.id, "view_types": view_types})
            for child_id in menu["children"]:
                walk(child_id, [*path, menu["name"]] if menu_id != root.id else [])

        walk(root.id, [])
        return {
            "role": role,
            "menus": plan,
            "exclude": EXCLUDED_BUTTONS,
            "verbose": bool(os.environ.get("ECRM_SMOKE_VERBOSE")),
        }

    def _run_smoke(self, user, role):
        plan = self._menu_plan(user, role)
        self.assertGreater(len(plan["menus"]), 5)
        self.browser_js(
            "/odoo",
            f"window.ecrmUiSmoke({json.dumps(plan)})",
            ready="!!(window.ecrmUiSmoke && odoo.__WOWL_DEBUG__ && odoo.__WOWL_DEBUG__.root)",
            login=user.login,
            timeout=600,
            # Errors are collected by the smoke test and reported once, with their screen.
            error_checker=lambda message: message.startswith("ecrm-smoke"),
        )
        return plan

    def test_every_screen_as_administrator(self):
        self._run_smoke(self.admin, "administrator")

    def test_every_screen_as_salesperson(self):
        plan = self._run_smoke(self.salesman, "salesperson")
        self.assertNotIn("Configuration", " ".join(m["path"] for m in plan["menus"]))

    def _prepare_campaign(self, user):
        self.start_tour(
            "/odoo/action-ecrm_addon.ecrm_campaign_action",
            "ecrm_campaign_prepare_tour",
            login=user.login,
        )
        campaign = self.env["ecrm.campaign"].search([("name", "=", "Smoke call campaign")])
        self.assertEqual(campaign.state, "prepared")
        self.assertEqual(campaign.create_uid, user)

    def test_prepare_campaign_as_administrator(self):
        self._prepare_campaign(self.admin)

    def test_prepare_campaign_as_salesperson(self):
        self._prepare_campaign(self.salesman)
