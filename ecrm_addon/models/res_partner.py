import operator as py_operator
from datetime import timedelta

from odoo import api, fields, models, tools
from odoo.exceptions import UserError
from odoo.tools import SQL

SQL_OPERATORS = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
PY_OPERATORS = {
    "=": py_operator.eq,
    "!=": py_operator.ne,
    "<": py_operator.lt,
    "<=": py_operator.le,
    ">": py_operator.gt,
    ">=": py_operator.ge,
}
RECENT_DAYS = 90
TIMELINE_SIZE = 20
CHURN_RISK_HELP = (
    "Chance that this customer has stopped buying, from the pattern of their orders (a "
    "model of purchase timing). Not the same as the 'At Risk' RFM segment, which only "
    "ranks how long ago they bought."
)
ECRM_PARTNER_INDEXED = ("email_normalized", "phone_sanitized")


class ResPartner(models.Model):
    _inherit = "res.partner"

    ecrm_interaction_ids = fields.One2many(
        "ecrm.interaction",
        "commercial_partner_id",
        string="Interactions",
        groups="ecrm_addon.group_ecrm_user",
        domain=lambda self: [("company_id", "=", self.env.company.id)],
    )
    ecrm_timeline_ids = fields.Many2many(
        "ecrm.interaction",
        string="Latest Interactions",
        compute="_compute_ecrm_timeline",
        groups="ecrm_addon.group_ecrm_user",
        help="The latest interactions with this customer in the current company; the smart "
        "button opens them all.",
    )
    ecrm_interaction_count = fields.Integer(
        string="Interaction Count",
        compute="_compute_ecrm_contact_figures",
        groups="ecrm_addon.group_ecrm_user",
    )
    ecrm_last_contact_date = fields.Datetime(
        string="Last Contact",
        compute="_compute_ecrm_contact_figures",
        search="_search_ecrm_last_contact_date",
        groups="ecrm_addon.group_ecrm_user",
        help="Date of the latest interaction with this customer in the current company.",
    )
    ecrm_days_since_contact = fields.Integer(
        string="Days Since Last Contact",
        compute="_compute_ecrm_contact_figures",
        search="_search_ecrm_days_since_contact",
        groups="ecrm_addon.group_ecrm_user",
    )
    ecrm_interaction_count_recent = fields.Integer(
        string="Interactions (90 days)",
        compute="_compute_ecrm_contact_figures",
        search="_search_ecrm_interaction_count_recent",
        groups="ecrm_addon.group_ecrm_user",
        help="Number of interactions with this customer in the current company over the last "
        "90 days.",
    )
    ecrm_preferred_channel_id = fields.Many2one(
        "ecrm.channel",
        string="Preferred Channel",
        compute="_compute_ecrm_contact_figures",
        search="_search_ecrm_preferred_channel_id",
        groups="ecrm_addon.group_ecrm_user",
        help="The channel this customer contacts the company on most (inbound interactions "
        "in the current company).",
    )

    # Customer value: the current company's row of ecrm.customer.score (of the customer
    # company for a contact person), computed for many partners with one search.
    ecrm_score_id = fields.Many2one(
        "ecrm.customer.score",
        string="Customer Value",
        compute="_compute_ecrm_score",
        search="_search_ecrm_score_id",
        groups="ecrm_addon.group_ecrm_user",
    )
    ecrm_scored_elsewhere = fields.Char(
        "Scored In",
        compute="_compute_ecrm_scored_elsewhere",
        groups="ecrm_addon.group_ecrm_user",
        help="Not scored in the current company: the user's other companies that score "
        "this customer.",
    )
    ecrm_segment_id = fields.Many2one(
        "ecrm.rfm.segment",
        string="RFM Segment",
        compute="_compute_ecrm_score",
        search="_search_ecrm_segment_id",
        groups="ecrm_addon.group_ecrm_user",
    )
    ecrm_tier_id = fields.Many2one(
        "ecrm.loyalty.tier",
        string="Loyalty Tier",
        compute="_compute_ecrm_score",
        search="_search_ecrm_tier_id",
        groups="ecrm_addon.group_ecrm_user",
    )
    ecrm_loyalty_score = fields.Float(
        string="Loyalty Score",
        compute="_compute_ecrm_score",
        search="_search_ecrm_loyalty_score",
        groups="ecrm_addon.group_ecrm_user",
    )
    ecrm_churn_risk = fields.Float(
        string="Churn Risk",
        help=CHURN_RISK_HELP,
        compute="_compute_ecrm_score",
        search="_search_ecrm_churn_risk",
        groups="ecrm_addon.group_ecrm_user",
    )
    ecrm_clv = fields.Float(
        string="Lifetime Value",
        help="What this customer's future orders are expected to be worth, discounted, "
        "over the horizon set in the settings.",
        compute="_compute_ecrm_score",
        search="_search_ecrm_clv",
        groups="ecrm_addon.group_ecrm_user",
    )
    ecrm_rfm_code = fields.Char(
        string="RFM",
        compute="_compute_ecrm_score",
        search="_search_ecrm_rfm_code",
        groups="ecrm_addon.group_ecrm_user",
    )
    ecrm_is_top_clv = fields.Boolean(
        string="Top 10% Lifetime Value",
        compute="_compute_ecrm_is_top_clv",
        search="_search_ecrm_is_top_clv",
        groups="ecrm_addon.group_ecrm_user",
    )

    ecrm_score_currency_id = fields.Many2one(
        "res.currency",
        string="Score Currency",
        compute="_compute_ecrm_score",
        groups="ecrm_addon.group_ecrm_user",
    )
    ecrm_recency_days = fields.Integer(
        "Days Since Last Purchase",
        compute="_compute_ecrm_score",
        groups="ecrm_addon.group_ecrm_user",
    )
    ecrm_frequency = fields.Integer(
        "Orders", compute="_compute_ecrm_score", groups="ecrm_addon.group_ecrm_user"
    )
    ecrm_monetary_total = fields.Monetary(
        "Total Spent",
        compute="_compute_ecrm_score",
        currency_field="ecrm_score_currency_id",
        groups="ecrm_addon.group_ecrm_user",
    )
    ecrm_monetary_avg = fields.Monetary(
        "Average Order",
        compute="_compute_ecrm_score",
        currency_field="ecrm_score_currency_id",
        groups="ecrm_addon.group_ecrm_user",
    )
    ecrm_p_alive = fields.Float(
        "Probability Still Active",
        compute="_compute_ecrm_score",
        groups="ecrm_addon.group_ecrm_user",
    )
    ecrm_expected_purchases_365 = fields.Float(
        "Expected Orders (next year)",
        compute="_compute_ecrm_score",
        groups="ecrm_addon.group_ecrm_user",
    )
    ecrm_expected_order_value = fields.Monetary(
        "Expected Order Value",
        compute="_compute_ecrm_score",
        currency_field="ecrm_score_currency_id",
        groups="ecrm_addon.group_ecrm_user",
    )
    ecrm_scored_at = fields.Datetime(
        "Scored As Of", compute="_compute_ecrm_score", groups="ecrm_addon.group_ecrm_user"
    )

    ecrm_campaign_coupon = fields.Char(
        "Campaign Coupon Code",
        compute="_compute_ecrm_campaign_coupon",
        help="In a campaign email: the customer's personal coupon code of the campaign.",
    )
    ecrm_preference_url = fields.Char(
        "Preference Centre Link",
        compute="_compute_ecrm_preference_url",
        help="In a campaign email: the page where the customer chooses how the company "
        "may contact them, and unsubscribes.",
    )
    ecrm_frozen_segment_ids = fields.Many2many(
        "ecrm.segment",
        "ecrm_segment_partner_rel",
        "partner_id",
        "segment_id",
        string="Frozen Segments",
        groups="ecrm_addon.group_ecrm_user",
    )
    # Consent
    ecrm_consent_ids = fields.One2many(
        "ecrm.consent", "partner_id", string="Consents", groups="ecrm_addon.group_ecrm_user"
    )
    ecrm_consent_event_ids = fields.One2many(
        "ecrm.consent.event",
        "partner_id",
        string="Consent History",
        groups="ecrm_addon.group_ecrm_user",
    )
    ecrm_email_contactable = fields.Boolean(
        string="Email Marketing Allowed",
        compute="_compute_ecrm_contactable",
        search="_search_ecrm_email_contactable",
        groups="ecrm_addon.group_ecrm_user",
        help="The customer may receive marketing by email now in the current company: an "
        "address, not blacklisted, consent as the company's policy requires, not paused.",
    )
    ecrm_sms_contactable = fields.Boolean(
        string="SMS Marketing Allowed",
        compute="_compute_ecrm_contactable",
        search="_search_ecrm_sms_contactable",
        groups="ecrm_addon.group_ecrm_user",
    )
    ecrm_phone_contactable = fields.Boolean(
        string="Marketing Calls Allowed",
        compute="_compute_ecrm_contactable",
        search="_search_ecrm_phone_contactable",
        groups="ecrm_addon.group_ecrm_user",
    )

    @api.depends_context("company")
    def _compute_ecrm_contactable(self):
        Consent = self.env["ecrm.consent"]
        Channel = self.env["ecrm.channel"].sudo()  # sudo: channels are configuration
        allowed = {}
        for code in ("email", "sms", "phone"):
            channel = Channel._get_by_code(code)
            ids = self.filtered("id").ids
            allowed[code] = (
                set(Consent._get_contactable(ids, channel)) if channel and ids else set()
            )
        for partner in self:
            partner.ecrm_email_contactable = partner.id in allowed["email"]
            partner.ecrm_sms_contactable = partner.id in allowed["sms"]
            partner.ecrm_phone_contactable = partner.id in allowed["phone"]

    def _ecrm_search_contactable(self, code, operator, value):
        if operator not in ("=", "!=") or not isinstance(value, bool):
            raise UserError(self.env._("Search consent with = True or = False."))
        channel = self.env["ecrm.channel"].sudo()._get_by_code(code)
        domain = [("id", "in", self.env["ecrm.consent"]._contactable_query(channel))]
        return domain if (operator == "=") == value else ["!", *domain]

    def _search_ecrm_email_contactable(self, operator, value):
        return self._ecrm_search_contactable("email", operator, value)

    def _search_ecrm_sms_contactable(self, operator, value):
        return self._ecrm_search_contactable("sms", operator, value)

    def _search_ecrm_phone_contactable(self, operator, value):
        return self._ecrm_search_contactable("phone", operator, value)

    def _ecrm_preference_token(self, company=None):
        """Signed token of the preference centre: the partner and company ids only."""
        self.ensure_one()
        company = company or self.env.company
        return tools.hash_sign(
            self.env(su=True),
            "ecrm_preferences",
            {"p": self.id, "c": company.id},
            expiration_hours=24 * 180,
        )

    def action_ecrm_request_double_opt_in(self):
        """Email each customer a signed link (valid 3 days) to confirm email marketing."""
        template = self.env.ref("ecrm_addon.mail_template_ecrm_double_opt_in")
        channel = self.env["ecrm.channel"].sudo()._get_by_code("email")
        without_email = self.filtered(lambda partner: not partner.email_normalized)
        if without_email:
            raise UserError(
                self.env._(
                    "These customers have no email address: %s",
                    ", ".join(without_email.mapped("display_name")),
                )
            )
        for partner in self:
            token = tools.hash_sign(
                self.env(su=True),
                "ecrm_double_opt_in",
                {"p": partner.id, "c": self.env.company.id, "ch": channel.id},
                expiration_hours=72,
            )
            url = f"{partner.get_base_url()}/ecrm/consent/confirm/{token}"
            template.with_context(ecrm_confirm_url=url).send_mail(partner.id)
        return True

    def mail_allowed_qweb_expressions(self):
        # The e-CRM placeholders of campaign emails: plain reads of the customer, which
        # marketers without the Mail Template Editor right may use too.
        return (
            *super().mail_allowed_qweb_expressions(),
            "object.ecrm_campaign_coupon",
            "object.ecrm_preference_url",
            "object.ecrm_tier_id.name",
            "object.ecrm_segment_id.name",
            "object.commercial_partner_id.name",
        )

    def ecrm_campaign_coupon_code(self, campaign_id):
        """The customer's unique coupon code in a campaign, for message templates:
        ``<t t-out="object.ecrm_campaign_coupon_code(ecrm_campaign_id)"/>`` (campaign
        emails also offer the field ``ecrm_campaign_coupon`` as a placeholder)."""
        self.ensure_one()
        return self.with_context(ecrm_campaign_id=campaign_id).ecrm_campaign_coupon

    @api.depends_context("ecrm_campaign_id")
    def _compute_ecrm_campaign_coupon(self):
        """``self`` are the people a campaign email goes to (the customer, or the contact
        person it is reached through); the mailing queue renders a batch of them: one
        query for the batch."""
        campaign_id = self.env.context.get("ecrm_campaign_id")
        ids = [partner_id for partner_id in self.ids if partner_id]
        codes = {}
        if campaign_id and ids:
            # Raw SQL below: the caller must be allowed to read the campaign.
            self.env["ecrm.campaign"].browse(campaign_id).check_access("read")
            self.env["ecrm.campaign.recipient"].flush_model()
            self.env["loyalty.card"].flush_model(["code"])
            codes = dict(
                self.env.execute_query(
                    SQL(
                        """
                        SELECT r.contact_id, c.code
                          FROM ecrm_campaign_recipient r
                          JOIN loyalty_card c ON c.id = r.coupon_id
                         WHERE r.campaign_id = %s AND r.contact_id = ANY(%s)
                        """,
                        campaign_id,
                        ids,
                    )
                )
            )
        for partner in self:
            partner.ecrm_campaign_coupon = codes.get(partner.id, "")

    @api.depends_context("company", "ecrm_campaign_id")
    def _compute_ecrm_preference_url(self):
        campaign = self.env["ecrm.campaign"].browse(self.env.context.get("ecrm_campaign_id"))
        # sudo: the campaign's company only, to sign the link for the right company
        company = campaign.sudo().company_id or self.env.company
        for partner in self:
            partner.ecrm_preference_url = (
                partner._ecrm_preference_url(company) if partner.id else False
            )

    def _ecrm_preference_url(self, company=None):
        self.ensure_one()
        return f"{self.get_base_url()}/ecrm/preferences/{self._ecrm_preference_token(company)}"

    @api.depends_context("company", "uid")
    def _compute_ecrm_scored_elsewhere(self):
        unscored = self.filtered(lambda partner: not partner.ecrm_score_id)
        names = {}
        if unscored:
            # sudo: the scores of the user's other companies, which the company switcher
            # hides; only those companies' names are shown
            groups = (
                self.env["ecrm.customer.score"]
                .sudo()
                ._read_group(
                    [
                        ("partner_id", "in", unscored.commercial_partner_id.ids),
                        ("company_id", "in", self.env.user.company_ids.ids),
                        ("company_id", "!=", self.env.company.id),
                    ],
                    ["partner_id"],
                    ["company_id:recordset"],
                )
            )
            names = {
                partner.id: ", ".join(companies.sorted("name").mapped("name"))
                for partner, companies in groups
            }
        for partner in self:
            partner.ecrm_scored_elsewhere = (
                not partner.ecrm_score_id and names.get(partner.commercial_partner_id.id)
            ) or False

    @api.depends_context("company")
    def _compute_ecrm_score(self):
        scores = self.env["ecrm.customer.score"].search(
            [
                ("partner_id", "in", self.commercial_partner_id.ids),
                ("company_id", "=", self.env.company.id),
            ]
        )
        by_partner = {score.partner_id.id: score for score in scores}
        for partner in self:
            score = by_partner.get(partner.commercial_partner_id.id, scores.browse())
            partner.ecrm_score_id = score
            partner.ecrm_segment_id = score.segment_id
            partner.ecrm_tier_id = score.tier_id
            partner.ecrm_loyalty_score = score.loyalty_score
            partner.ecrm_churn_risk = score.churn_risk
            partner.ecrm_clv = score.clv
            partner.ecrm_rfm_code = score.rfm_code
            partner.ecrm_score_currency_id = score.currency_id
            partner.ecrm_recency_days = score.recency_days
            partner.ecrm_frequency = score.frequency
            partner.ecrm_monetary_total = score.monetary_total
            partner.ecrm_monetary_avg = score.monetary_avg
            partner.ecrm_p_alive = score.p_alive
            partner.ecrm_expected_purchases_365 = score.expected_purchases_365
            partner.ecrm_expected_order_value = score.expected_order_value
            partner.ecrm_scored_at = score.scored_at

    @api.depends_context("company")
    def _compute_ecrm_is_top_clv(self):
        threshold = self._ecrm_top_clv_threshold()
        for partner in self:
            score = partner.ecrm_score_id
            partner.ecrm_is_top_clv = (
                bool(score) and threshold is not None and (score.clv >= threshold)
            )

    def _ecrm_top_clv_threshold(self):
        """Lifetime value of the 90th percentile of the current company's customers."""
        Score = self.env["ecrm.customer.score"]
        Score.flush_model(["clv", "company_id"])
        self.env.cr.execute(
            SQL(
                """SELECT percentile_disc(0.9) WITHIN GROUP (ORDER BY clv)
                     FROM ecrm_customer_score WHERE company_id = %s AND clv IS NOT NULL""",
                self.env.company.id,
            )
        )
        return self.env.cr.fetchone()[0]

    def _ecrm_score_domain(self, leaf):
        """Partners whose customer's score in the current company matches ``leaf``."""
        query = self.env["ecrm.customer.score"]._search(
            [("company_id", "=", self.env.company.id), leaf]
        )
        return [("commercial_partner_id", "in", query.subselect("partner_id"))]

    def _search_ecrm_score_id(self, operator, value):
        if operator in ("any", "not any"):
            query = self.env["ecrm.customer.score"]._search(
                [("company_id", "=", self.env.company.id), *value]
            )
            positive = "in" if operator == "any" else "not in"
            return [("commercial_partner_id", positive, query.subselect("partner_id"))]
        return self._ecrm_score_domain(("id", operator, value))

    def _search_ecrm_segment_id(self, operator, value):
        return self._ecrm_score_domain(("segment_id", operator, value))

    def _search_ecrm_tier_id(self, operator, value):
        return self._ecrm_score_domain(("tier_id", operator, value))

    def _search_ecrm_loyalty_score(self, operator, value):
        return self._ecrm_score_domain(("loyalty_score", operator, value))

    def _search_ecrm_churn_risk(self, operator, value):
        return self._ecrm_score_domain(("churn_risk", operator, value))

    def _search_ecrm_clv(self, operator, value):
        return self._ecrm_score_domain(("clv", operator, value))

    def _search_ecrm_rfm_code(self, operator, value):
        return self._ecrm_score_domain(("rfm_code", operator, value))

    def _search_ecrm_is_top_clv(self, operator, value):
        if operator not in ("=", "!=") or not isinstance(value, bool):
            raise UserError(self.env._("Search the top lifetime values with = True or = False."))
        threshold = self._ecrm_top_clv_threshold()
        if threshold is None:
            return [(0, "=", 1)] if (operator == "=") == value else []
        domain = self._ecrm_score_domain(("clv", ">=", threshold))
        return domain if (operator == "=") == value else ["!", *domain]

    def init(self):
        res = super().init()
        # The ingestion API matches customers by normalized email and phone, which Odoo
        # does not index on res_partner. Dropped by the uninstall hook.
        for column in ECRM_PARTNER_INDEXED:
            tools.create_index(
                self.env.cr,
                f"res_partner_ecrm_{column}_idx",
                self._table,
                [column],
                where=f"{column} IS NOT NULL",
            )
        return res

    @api.depends_context("company")
    def _compute_ecrm_timeline(self):
        """The newest interactions of each customer: an index range read, whatever the
        length of the customer's history (no read of all their interaction ids)."""
        Interaction = self.env["ecrm.interaction"]
        for partner in self:
            commercial = partner.commercial_partner_id
            partner.ecrm_timeline_ids = (
                Interaction.search(
                    [
                        ("commercial_partner_id", "=", commercial.id),
                        ("company_id", "=", self.env.company.id),
                    ],
                    limit=TIMELINE_SIZE,
                )
                if commercial.id
                else Interaction
            )

    @api.depends_context("company")
    def _compute_ecrm_contact_figures(self):
        """All figures of all partners in self with one grouped query.

        Counts per customer, channel and direction in the current company (an index range
        per customer), folded in Python: the total, the last date, the last 90 days, and
        the inbound channel used most (ties: the most recent).
        """
        commercial_ids = self.commercial_partner_id.filtered("id").ids
        rows = []
        if commercial_ids:
            self.env["ecrm.interaction"].flush_model(
                [
                    "commercial_partner_id",
                    "channel_id",
                    "direction",
                    "date",
                    "company_id",
                    "outcome",
                ]
            )
            rows = self.env.execute_query(
                SQL(
                    """
                    SELECT commercial_partner_id, channel_id, direction, count(*), max(date),
                           count(*) FILTER (WHERE date >= %(since)s)
                      FROM ecrm_interaction
                     WHERE commercial_partner_id = ANY(%(partners)s)
                       AND company_id = %(company)s
                       AND outcome IS DISTINCT FROM 'skipped'
                  GROUP BY commercial_partner_id, channel_id, direction
                    """,
                    since=fields.Datetime.now() - timedelta(days=RECENT_DAYS),
                    partners=commercial_ids,
                    company=self.env.company.id,
                )
            )
        figures = {}
        for partner_id, channel_id, direction, count, last, recent in rows:
            total, last_date, recent_total, preferred = figures.get(partner_id, (0, None, 0, None))
            if direction == "inbound" and (preferred is None or (count, last) > preferred[1:]):
                preferred = (channel_id, count, last)
            figures[partner_id] = (
                total + count,
                max(last_date, last) if last_date else last,
                recent_total + recent,
                preferred,
            )
        Channel = self.env["ecrm.channel"]
        now = fields.Datetime.now()
        for partner in self:
            count, last, recent, preferred = figures.get(
                partner.commercial_partner_id.id, (0, None, 0, None)
            )
            partner.ecrm_interaction_count = count
            partner.ecrm_last_contact_date = last or False
            partner.ecrm_days_since_contact = (now - last).days if last else 0
            partner.ecrm_interaction_count_recent = recent
            partner.ecrm_preferred_channel_id = Channel.browse(preferred[0] if preferred else ())

    def _ecrm_having_domain(self, having):
        """Partners whose customer's interactions in the current company match ``having``."""
        self.env["ecrm.interaction"].flush_model(["commercial_partner_id", "company_id", "date"])
        return [
            (
                "commercial_partner_id",
                "in",
                SQL(
                    """(SELECT commercial_partner_id FROM ecrm_interaction
                         WHERE company_id = %s AND outcome IS DISTINCT FROM 'skipped'
                      GROUP BY commercial_partner_id HAVING %s)""",
                    self.env.company.id,
                    having,
                ),
            )
        ]

    def _ecrm_check_operator(self, operator, value):
        if operator not in SQL_OPERATORS:
            raise UserError(self.env._("Unsupported search operator: %s", operator))
        if value is False or value is None:
            raise UserError(self.env._("Search this figure with a value."))

    def _search_ecrm_last_contact_date(self, operator, value):
        if operator in ("=", "!=") and value is False:
            contacted = self._ecrm_having_domain(SQL("TRUE"))
            return contacted if operator == "!=" else ["!", *contacted]
        self._ecrm_check_operator(operator, value)
        value = fields.Datetime.to_datetime(value)
        return self._ecrm_having_domain(SQL("max(date) %s %s", SQL(SQL_OPERATORS[operator]), value))

    def _search_ecrm_days_since_contact(self, operator, value):
        """Days since last contact ``op`` N, i.e. last contact ``reverse op`` now - N days."""
        self._ecrm_check_operator(operator, value)
        reverse = {"=": "=", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
        limit = fields.Datetime.now() - timedelta(days=int(value))
        if operator in ("=", "!="):
            day = SQL(
                "max(date) > %s AND max(date) <= %s",
                limit - timedelta(days=1),
                limit,
            )
            domain = self._ecrm_having_domain(day)
            return domain if operator == "=" else ["!", *domain]
        return self._search_ecrm_last_contact_date(reverse[operator], limit)

    def _search_ecrm_interaction_count_recent(self, operator, value):
        self._ecrm_check_operator(operator, value)
        since = fields.Datetime.now() - timedelta(days=RECENT_DAYS)
        count = SQL("count(*) FILTER (WHERE date >= %s)", since)
        matches = SQL("%s %s %s", count, SQL(SQL_OPERATORS[operator]), int(value))
        if PY_OPERATORS[operator](0, int(value)):
            # Customers without any interaction match too: exclude the ones that do not.
            return ["!", *self._ecrm_having_domain(SQL("NOT (%s)", matches))]
        return self._ecrm_having_domain(matches)

    def _search_ecrm_preferred_channel_id(self, operator, value):
        if operator not in ("=", "in"):
            raise UserError(self.env._("Unsupported search operator: %s", operator))
        if isinstance(value, str):
            ids = self.env["ecrm.channel"].search([("name", "ilike", value)]).ids
        else:
            ids = [value] if isinstance(value, int) else list(value or [])
        self.env["ecrm.interaction"].flush_model(
            ["commercial_partner_id", "company_id", "date", "direction", "channel_id"]
        )
        return [
            (
                "commercial_partner_id",
                "in",
                SQL(
                    """(SELECT commercial_partner_id FROM (
                            SELECT DISTINCT ON (commercial_partner_id)
                                   commercial_partner_id, channel_id
                              FROM ecrm_interaction
                             WHERE company_id = %s AND direction = 'inbound'
                               AND outcome IS DISTINCT FROM 'skipped'
                          GROUP BY commercial_partner_id, channel_id
                          ORDER BY commercial_partner_id, count(*) DESC, max(date) DESC
                        ) preferred WHERE channel_id IN %s)""",
                    self.env.company.id,
                    tuple(ids) or (0,),
                ),
            )
        ]

    def action_ecrm_view_interactions(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id("ecrm_addon.ecrm_interaction_action")
        action["domain"] = [("commercial_partner_id", "=", self.commercial_partner_id.id)]
        action["context"] = {
            "default_partner_id": self.id,
            "search_default_filter_current_company": 1,
        }
        return action

    def action_ecrm_log_interaction(self):
        self.ensure_one()
        return self.env["ecrm.interaction"]._action_log_interaction(
            partner=self, res_model=self._name, res_id=self.id
        )
