from odoo import Command, sql_db
from odoo.tests import TransactionCase, new_test_user
from odoo.tests.common import get_db_name
from odoo.tools import SQL


class EcrmCommon(TransactionCase):
    """Two companies in two currencies, e-CRM users and customers with orders.

    Company A is the main company (its currency), company B runs in another
    currency. ``ecrm_salesman`` works in company A only, ``ecrm_salesman_b`` in
    company B only and ``ecrm_manager`` in both.
    """

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        # Scoring runs write their batches through a connection of their own: the tables
        # it committed outlive the test's rollback (runs that never existed for others).
        with sql_db.db_connect(get_db_name()).cursor() as cr:
            cr.execute(
                r"""SELECT relname FROM pg_class
                     WHERE relkind = 'r' AND relname ~ '^ecrm_score_result_[0-9]+_[0-9]+$'
                       AND NOT EXISTS (
                           SELECT FROM ecrm_score_run r
                            WHERE r.id = substring(relname FROM '^ecrm_score_result_([0-9]+)')::int)
                """
            )
            for (name,) in cr.fetchall():
                cr.execute(SQL("DROP TABLE %s", SQL.identifier(name)))

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.company_a = cls.env.ref("base.main_company")
        cls.currency_a = cls.company_a.currency_id
        cls.currency_b = (
            cls.env["res.currency"]
            .with_context(active_test=False)
            .search([("name", "=", "EUR" if cls.currency_a.name != "EUR" else "USD")], limit=1)
        )
        cls.currency_b.active = True
        cls.company_b = cls.env["res.company"].create(
            {"name": "e-CRM Test Company B", "currency_id": cls.currency_b.id}
        )
        cls.env["res.currency.rate"].create(
            [
                {
                    "name": "2020-01-01",
                    "rate": 0.5,
                    "currency_id": cls.currency_b.id,
                    "company_id": cls.company_a.id,
                },
                {
                    "name": "2020-01-01",
                    "rate": 2.0,
                    "currency_id": cls.currency_a.id,
                    "company_id": cls.company_b.id,
                },
            ]
        )
        cls.team_a = cls.env["crm.team"].create({"name": "Team A", "company_id": cls.company_a.id})
        cls.team_b = cls.env["crm.team"].create({"name": "Team B", "company_id": cls.company_b.id})
        user_groups = "sales_team.group_sale_salesman,ecrm_addon.group_ecrm_user"
        cls.user_salesman = new_test_user(
            cls.env,
            login="ecrm_salesman",
            name="Sam Salesman",
            email="sam.salesman@example.com",
            groups=user_groups,
            company_id=cls.company_a.id,
            company_ids=[Command.set(cls.company_a.ids)],
        )
        cls.user_salesman_b = new_test_user(
            cls.env,
            login="ecrm_salesman_b",
            name="Bea Salesman",
            email="bea.salesman@example.com",
            groups=user_groups,
            company_id=cls.company_b.id,
            company_ids=[Command.set(cls.company_b.ids)],
        )
        cls.user_manager = new_test_user(
            cls.env,
            login="ecrm_manager",
            name="Maria Manager",
            email="maria.manager@example.com",
            groups="sales_team.group_sale_manager,ecrm_addon.group_ecrm_manager",
            company_id=cls.company_a.id,
            company_ids=[Command.set((cls.company_a | cls.company_b).ids)],
        )
        cls.user_employee = new_test_user(
            cls.env, login="ecrm_employee", name="Eve Employee", groups="base.group_user"
        )
        cls.product = cls.env["product.product"].create(
            {"name": "e-CRM Test Product", "list_price": 100.0, "taxes_id": [Command.clear()]}
        )
        cls.customer = cls.env["res.partner"].create(
            {"name": "Carla Customer", "email": "carla@example.com", "customer_rank": 1}
        )
        cls.customer_b = cls.env["res.partner"].create(
            {
                "name": "Bruno Customer",
                "email": "bruno@example.com",
                "customer_rank": 1,
                "company_id": cls.company_b.id,
            }
        )

    @classmethod
    def _coupon_program(cls, name="10% coupon", company=None):
        """A coupon program of 10% off, used with a code, in company A by default."""
        return cls.env["loyalty.program"].create(
            {
                "name": name,
                "program_type": "coupons",
                "company_id": (company or cls.company_a).id,
                "trigger": "with_code",
                "reward_ids": [Command.create({"discount": 10})],
            }
        )

    @classmethod
    def _create_order(cls, partner, company=None, qty=1, price=100.0, confirm=True, **vals):
        company = company or cls.company_a
        order = (
            cls.env["sale.order"]
            .with_company(company)
            .create(
                {
                    "partner_id": partner.id,
                    "company_id": company.id,
                    "order_line": [
                        Command.create(
                            {
                                "product_id": cls.product.id,
                                "product_uom_qty": qty,
                                "price_unit": price,
                                "tax_id": [Command.clear()],
                            }
                        )
                    ],
                    **vals,
                }
            )
        )
        if confirm:
            order.action_confirm()
        return order
