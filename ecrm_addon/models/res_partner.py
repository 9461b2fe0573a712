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
    def _compute_ecrm_contact_figures(self):
        """All figures of all partners in self with three grouped queries."""
        commercial = self.commercial_partner_id.filtered("id")
        base = [
            ("commercial_partner_id", "in", commercial.ids),
            ("company_id", "=", self.env.company.id),
        ]
        Interaction = self.env["ecrm.interaction"]
        totals = {
            partner.id: (count, last)
            for partner, count, last in Interaction._read_group(
                base, ["commercial_partner_id"], ["__count", "date:max"]
            )
        }
        since = fields.Datetime.now() - timedelta(days=RECENT_DAYS)
        recent = {
            partner.id: count
            for partner, count in Interaction._read_group(
                [*base, ("date", ">=", since)], ["commercial_partner_id"], ["__count"]
            )
        }
        preferred = {}
        for partner, channel, count, last in Interaction._read_group(
            [*base, ("direction", "=", "inbound")],
            ["commercial_partner_id", "channel_id"],
            ["__count", "date:max"],
        ):
            if partner.id not in preferred or (count, last) > preferred[partner.id][1:]:
                preferred[partner.id] = (channel, count, last)
        now = fields.Datetime.now()
        for partner in self:
            key = partner.commercial_partner_id.id
            count, last = totals.get(key, (0, False))
            partner.ecrm_interaction_count = count
            partner.ecrm_last_contact_date = last
            partner.ecrm_days_since_contact = (now - last).days if last else 0
            partner.ecrm_interaction_count_recent = recent.get(key, 0)
            partner.ecrm_preferred_channel_id = preferred.get(key, (False,))[0]

    def _ecrm_having_domain(self, having):
        """Partners whose customer's interactions in the current company match ``having``."""
        self.env["ecrm.interaction"].flush_model(["commercial_partner_id", "company_id", "date"])
        return [
            (
                "commercial_partner_id",
                "in",
                SQL(
                    """(SELECT commercial_partner_id FROM ecrm_interaction
                         WHERE company_id = %s GROUP BY commercial_partner_id HAVING %s)""",
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
