import random
from datetime import timedelta

from odoo import Command, api, fields, models
from odoo.tools import SQL

FIRST_NAMES = [
    "Anna", "Ben", "Chloe", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas",
    "Klara", "Liam", "Maya", "Noah", "Olga", "Pablo", "Quinn", "Rosa", "Samir", "Tess",
]  # fmt: skip
LAST_NAMES = [
    "Adler", "Brooks", "Costa", "Dubois", "Evans", "Fischer", "Garcia", "Hansen", "Ito",
    "Jensen", "Keller", "Lopez", "Martin", "Novak", "Olsen", "Peters", "Rossi", "Schmidt",
]  # fmt: skip
COMPANY_WORDS = [
    "Alpine", "Blue", "Cedar", "Delta", "Ember", "Falcon", "Granite", "Harbor", "Iris",
    "Juniper", "Kite", "Lumen", "Maple", "Nova", "Orbit", "Pioneer", "Quartz", "River",
]  # fmt: skip
COMPANY_KINDS = ["Bakery", "Studio", "Outfitters", "Labs", "Trading", "Hotels", "Clinic"]

DEMO_PRODUCTS = [
    ("Espresso Machine Pro", 489.0, "consu"),
    ("Coffee Grinder", 129.0, "consu"),
    ("Barista Course", 249.0, "service"),
    ("Single-Origin Beans 1 kg", 32.0, "consu"),
    ("Milk Frother", 59.0, "consu"),
    ("Descaling Kit", 14.5, "consu"),
    ("Service Plan (1 year)", 179.0, "service"),
    ("Travel Mug", 19.9, "consu"),
]
EUROPE_COMPANY = "Brewline Europe GmbH"

# Buying behaviours: (share of customers, orders per year, spend level, yearly churn chance)
PROFILES = [
    ("champion", 0.12, 10.0, 2.5, 0.02),
    ("loyal", 0.20, 5.0, 1.5, 0.05),
    ("regular", 0.25, 2.5, 1.0, 0.15),
    ("big_occasional", 0.08, 1.0, 4.0, 0.10),
    ("fading", 0.20, 3.0, 1.0, 0.70),
    ("one_off", 0.15, 0.3, 0.8, 0.90),
]


class EcrmDemo(models.AbstractModel):
    """Builds the demo business: customers with three years of confirmed orders.

    Only called from the demo data file. Customers get a buying profile (purchase
    rate, spend level, chance to stop buying) so that recency, frequency and
    monetary value differ the way they do in a real shop. Orders are created and
    confirmed through the ORM in batches, then back-dated in one SQL statement
    (confirmation sets ``date_order`` to now).
    """

    _name = "ecrm.demo"
    _description = "e-CRM demo data"

    @api.model
    def _generate_demo_data(self, customers=200, years=3, seed=20261124):
        rng = random.Random(seed)
        main = self.env.ref("base.main_company")
        europe, team_europe, pricelist_eur, products = self._create_demo_business(main)
        customers = self._create_demo_customers(rng, customers, main, europe)
        now = fields.Datetime.now().replace(microsecond=0)
        start = now - timedelta(days=365 * years)
        plans = []
        for partner, home in customers:
            plans += self._plan_orders(rng, partner, home, (main, europe), start, now)
        teams = {main: self.env.ref("sales_team.team_sales_department"), europe: team_europe}
        self._create_demo_orders(rng, plans, products, teams, pricelist_eur)
        self._create_demo_interactions(rng, plans, now)
        self._create_demo_consents(rng, [partner for partner, _home in customers], now)
        self._score_demo_customers(main | europe, now)
        return True

    @api.model
    def _score_demo_customers(self, companies, now):
        """Score the demo business now and as of the last three month-ends (history)."""
        Run = self.env["ecrm.score.run"]
        month_start = now.replace(day=1, hour=12, minute=0, second=0)
        for company in companies:
            for months_back in (3, 2, 1):
                day = month_start
                for _index in range(months_back):
                    day = (day - timedelta(days=1)).replace(day=1)
                Run._queue_run(
                    company, "full", reference_date=day + timedelta(days=14)
                )._execute_all()
            Run._queue_run(company, "full", reference_date=now)._execute_all()

    @api.model
    def _create_demo_consents(self, rng, partners, now):
        """Opt-ins and opt-outs as customers would have given them, with proof."""
        email = self.env.ref("ecrm_addon.ecrm_channel_email")
        sms = self.env.ref("ecrm_addon.ecrm_channel_sms")
        main = self.env.ref("base.main_company")
        vals_list = []
        for partner in rng.sample(partners, 60):
            channel, state = rng.choice(
                [(email, "opt_out"), (email, "opt_in"), (sms, "opt_in"), (sms, "opt_out")]
            )
            vals_list.append(
                {
                    "partner_id": partner.id,
                    # a customer of one company has consent in that company only
                    "company_id": (partner.company_id or main).id,
                    "channel_id": channel.id,
                    "state": state,
                    "date": now - timedelta(days=rng.randint(1, 700)),
                    "source": rng.choice(["preference_centre", "import", "user"]),
                    "legal_basis": "consent",
                    "consent_text_version": "1",
                    "address": partner.email if channel == email else partner.phone,
                }
            )
        # demo proof as a customer page or an import would have recorded it
        self.env["ecrm.consent.event"]._create_trusted(vals_list)

    @api.model
    def _create_demo_interactions(self, rng, plans, now):
        """Calls, visits, letters, chats and emails around the customers' purchases."""
        channels = {
            code: self.env.ref(f"ecrm_addon.ecrm_channel_{code}")
            for code in ("phone", "email", "chat", "web", "in_person", "letter", "social")
        }
        kinds = [
            ("phone", "outbound", "manual", "Follow-up call", 30),
            ("phone", "inbound", "manual", "Customer called about delivery", 20),
            ("email", "inbound", "api", "Question about a product", 15),
            ("chat", "inbound", "api", "Chat on the web shop", 15),
            ("web", "inbound", "api", "Visited the web shop", 10),
            ("in_person", "outbound", "manual", "Visit at the customer's", 5),
            ("letter", "outbound", "manual", "Yearly catalogue sent", 3),
            ("social", "inbound", "api", "Comment on our page", 2),
        ]
        outcomes = {"phone": ["done", "no_answer", "voicemail", "follow_up", "interested"]}
        salespeople = self.env.ref("base.user_admin") | self.env.ref("base.user_demo")
        vals_list = []
        for plan in plans:
            if rng.random() > 0.6:
                continue
            code, direction, mode, subject, _weight = rng.choices(kinds, [k[4] for k in kinds])[0]
            date = min(plan["date"] + timedelta(days=rng.uniform(-10, 20)), now)
            vals_list.append(
                {
                    "partner_id": plan["partner"].id,
                    "channel_id": channels[code].id,
                    "direction": direction,
                    "date": date,
                    "subject": subject,
                    "duration": round(rng.uniform(0.05, 0.5), 2) if code == "phone" else 0.0,
                    "outcome": rng.choice(outcomes.get(code, ["done"])),
                    "user_id": rng.choice(salespeople).id,
                    "company_id": plan["company"].id,
                    "capture_mode": mode,
                    "source_system": "demo" if mode == "api" else False,
                    "external_ref": f"demo-{len(vals_list)}" if mode == "api" else False,
                }
            )
        self.env["ecrm.interaction"].create(vals_list)

    @api.model
    def _create_demo_business(self, main):
        """A second company in another currency, its team, a pricelist, products."""
        euro = self.env.ref("base.EUR")
        other_currency = euro if main.currency_id != euro else self.env.ref("base.USD")
        other_currency.active = True
        europe = self.env["res.company"].create(
            {
                "name": EUROPE_COMPANY,
                "currency_id": other_currency.id,
                "country_id": self.env.ref("base.de").id,
                "city": "Hamburg",
                "email": "hello@brewline-europe.example.com",
            }
        )
        salespeople = self.env.ref("base.user_admin") | self.env.ref("base.user_demo")
        salespeople.write({"company_ids": [Command.link(europe.id)]})
        team_europe = self.env["crm.team"].create(
            {
                "name": "Europe Sales",
                "company_id": europe.id,
                "user_id": self.env.ref("base.user_demo").id,
            }
        )
        pricelist = self.env["product.pricelist"].create(
            {"name": "Euro customers", "currency_id": other_currency.id, "company_id": main.id}
        )
        products = self.env["product.product"].create(
            [
                {
                    "name": name,
                    "list_price": price,
                    "standard_price": round(price * 0.55, 2),
                    "type": kind,
                    "sale_ok": True,
                    "taxes_id": [Command.clear()],
                }
                for name, price, kind in DEMO_PRODUCTS
            ]
        )
        return europe, team_europe, pricelist, products

    @api.model
    def _create_demo_customers(self, rng, count, main, europe):
        us = self.env.ref("base.us")
        eu_countries = [self.env.ref(f"base.{code}") for code in ("de", "fr", "be", "nl")]
        vals_list = []
        for index in range(count):
            in_europe = index % 4 == 0
            is_company = index % 3 == 0
            if is_company:
                name = (
                    f"{rng.choice(COMPANY_WORDS)} {rng.choice(COMPANY_WORDS)} "
                    f"{rng.choice(COMPANY_KINDS)}"
                )
            else:
                name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
            slug = "".join(ch for ch in name.lower() if ch.isalnum())
            vals_list.append(
                {
                    "name": name,
                    "is_company": is_company,
                    "email": f"{slug}{index}@example.com",
                    "phone": f"+1 555 01{index:04d}" if not in_europe else False,
                    "country_id": (rng.choice(eu_countries) if in_europe else us).id,
                    # A quarter of the customers belong to one company; the rest are shared.
                    "company_id": europe.id if in_europe and index % 8 == 0 else False,
                    "customer_rank": 1,
                    "ref": f"ECRM{index:04d}",
                }
            )
        partners = self.env["res.partner"].create(vals_list)
        return [
            (partner, europe if vals["country_id"] != us.id else main)
            for partner, vals in zip(partners, vals_list, strict=True)
        ]

    @api.model
    def _plan_orders(self, rng, partner, home, both_companies, start, now):
        """Simulate one customer's purchases: a list of (company, date, state, spend)."""
        weights = [profile[1] for profile in PROFILES]
        _name, _share, rate, spend, churn = rng.choices(PROFILES, weights)[0]
        rate *= rng.uniform(0.6, 1.4)
        spend *= rng.uniform(0.7, 1.3)
        span = (now - start).total_seconds()
        birth = start + timedelta(seconds=span * rng.random() ** 1.5)
        companies = [home]
        if not partner.company_id and rng.random() < 0.1:
            companies = list(both_companies)  # a shared customer buying from both companies
        plans = []
        date = birth
        while date < now:
            plans.append(
                {
                    "partner": partner,
                    "company": rng.choice(companies),
                    "date": date,
                    "spend": spend,
                    "state": rng.choices(["sale", "cancel", "draft"], [90, 6, 4])[0],
                }
            )
            if rng.random() < churn * (1 / max(rate, 0.3)):
                break  # this customer stopped buying
            date += timedelta(days=rng.expovariate(rate / 365.0))
        return plans

    @api.model
    def _create_demo_orders(self, rng, plans, products, teams, eur_pricelist):
        salespeople = self.env.ref("base.user_admin") | self.env.ref("base.user_demo")
        mediums = [
            self.env.ref("utm.utm_medium_website"),
            self.env.ref("utm.utm_medium_email"),
            None,
        ]
        vals_list = []
        for plan in plans:
            lines = []
            for product in rng.sample(list(products), rng.randint(1, 3)):
                qty = max(1, round(plan["spend"] * rng.gammavariate(2.0, 1.0)))
                lines.append((0, 0, {"product_id": product.id, "product_uom_qty": qty}))
            company = plan["company"]
            vals = {
                "partner_id": plan["partner"].id,
                "company_id": company.id,
                "team_id": teams[company].id,
                "user_id": rng.choice(salespeople).id,
                "order_line": lines,
            }
            medium = rng.choices(mediums, [30, 20, 50])[0]
            if medium:
                vals["medium_id"] = medium.id  # logged on the medium's channel
            if company == eur_pricelist.company_id and rng.random() < 0.15:
                vals["pricelist_id"] = eur_pricelist.id  # orders in a second currency
            vals_list.append(vals)
        orders = self.env["sale.order"].create(vals_list)
        by_state = {"sale": [], "cancel": [], "draft": []}
        for order, plan in zip(orders, plans, strict=True):
            by_state[plan["state"]].append(order.id)
        self.env["sale.order"].browse(by_state["sale"] + by_state["cancel"]).action_confirm()
        self.env["sale.order"].browse(by_state["cancel"])._action_cancel()
        self._backdate_orders(orders, [plan["date"] for plan in plans])

    @api.model
    def _backdate_orders(self, orders, dates):
        orders.flush_recordset()
        self.env.cr.execute(
            SQL(
                """
                UPDATE sale_order o
                   SET date_order = v.date_order, create_date = v.date_order
                  FROM unnest(%(ids)s::int[], %(dates)s::timestamp[]) AS v(id, date_order)
                 WHERE o.id = v.id
                """,
                ids=orders.ids,
                dates=[date.replace(microsecond=0) for date in dates],
            )
        )
        orders.invalidate_recordset(["date_order", "create_date"])
        # The confirmations were logged now: date them like their orders.
        self.env["ecrm.interaction"].flush_model()
        self.env.cr.execute(
            SQL(
                """
                UPDATE ecrm_interaction i
                   SET date = o.date_order
                  FROM sale_order o
                 WHERE i.res_model = 'sale.order' AND i.res_id = o.id AND o.id = ANY(%(ids)s)
                """,
                ids=orders.ids,
            )
        )
        self.env["ecrm.interaction"].invalidate_model(["date"])
