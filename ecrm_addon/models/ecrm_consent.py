from odoo import api, fields, models
from odoo.tools import SQL

from .ecrm_consent_event import EVENT_STATES

CONSENT_STATES = [state for state in EVENT_STATES if state[0] != "pause"]
SKIP_REASONS = [
    ("no_address", "No address"),
    ("blacklisted", "Blacklisted"),
    ("opted_out", "Opted out"),
    ("no_consent", "No consent"),
    ("paused", "Paused"),
]


class EcrmConsent(models.Model):
    """Current consent per customer, company, channel and purpose, derived from events."""

    _name = "ecrm.consent"
    _description = "Customer Consent"
    _order = "partner_id, company_id, channel_id"
    _rec_name = "partner_id"

    partner_id = fields.Many2one(
        "res.partner", string="Customer", required=True, index=True, ondelete="cascade"
    )
    company_id = fields.Many2one("res.company", required=True, index=True, ondelete="cascade")
    channel_id = fields.Many2one("ecrm.channel", required=True, ondelete="cascade")
    purpose_id = fields.Many2one("ecrm.consent.purpose", required=True, ondelete="cascade")
    state = fields.Selection(CONSENT_STATES, required=True, default="unknown")
    paused_until = fields.Datetime()
    last_event_id = fields.Many2one("ecrm.consent.event", string="Proof", ondelete="set null")
    date = fields.Datetime("Last Change")

    _sql_constraints = [
        (
            "key_uniq",
            "unique(partner_id, company_id, channel_id, purpose_id)",
            "One consent per customer, company, channel and purpose.",
        ),
    ]

    @api.model
    def _contact_sql(self, channel, purpose=None, company=None, at=None):
        """(FROM clause, reason expression, allowed condition) over res_partner p for a
        channel and purpose.

        The reason is NULL when contact is allowed, else one of SKIP_REASONS: no address,
        blacklisted in Odoo (email, SMS), opted out, no consent where the policy requires
        an explicit opt-in, or paused. Shared by the send-time check and the searches.
        """
        purpose = purpose or self.env.ref("ecrm_addon.ecrm_consent_purpose_marketing")
        company = company or self.env.company
        at = at or fields.Datetime.now()
        policy = self.env["ecrm.consent.policy"]._get_policy(company, channel, purpose)
        code = channel.code
        self.env["res.partner"].flush_model(["email_normalized", "phone_sanitized"])
        self.env["mail.blacklist"].flush_model(["email", "active"])
        self.env["phone.blacklist"].flush_model(["number", "active"])
        self.flush_model()
        address = SQL("TRUE")
        blacklisted = SQL("FALSE")
        if code == "email":
            address = SQL("p.email_normalized IS NOT NULL")
            blacklisted = SQL(
                "EXISTS (SELECT 1 FROM mail_blacklist b WHERE b.email = p.email_normalized "
                "AND b.active)"
            )
        elif code in ("sms", "phone"):
            address = SQL("COALESCE(p.phone_sanitized, p.phone, p.mobile) IS NOT NULL")
            if code == "sms":
                blacklisted = SQL(
                    "EXISTS (SELECT 1 FROM phone_blacklist b WHERE b.number = p.phone_sanitized "
                    "AND b.active)"
                )
        elif code == "letter":
            address = SQL("(p.street IS NOT NULL OR p.city IS NOT NULL)")
        from_clause = SQL(
            """res_partner p
          LEFT JOIN ecrm_consent c
                 ON c.partner_id = p.id AND c.company_id = %(company)s
                AND c.channel_id = %(channel)s AND c.purpose_id = %(purpose)s""",
            company=company.id,
            channel=channel.id,
            purpose=purpose.id,
        )
        reason = SQL(
            """CASE WHEN NOT (%(address)s) THEN 'no_address'
                    WHEN c.state = 'opt_out' THEN 'opted_out'
                    WHEN %(blacklisted)s THEN 'blacklisted'
                    WHEN c.state IS DISTINCT FROM 'opt_in' AND %(policy)s = 'opt_in'
                         THEN 'no_consent'
                    WHEN c.paused_until > %(at)s THEN 'paused'
               END""",
            address=address,
            blacklisted=blacklisted,
            policy=policy,
            at=at,
        )
        # The same rule as a conjunction, for the searches: the planner estimates plain
        # conditions well and turns NOT EXISTS into an anti-join (it takes "CASE ... IS
        # NULL" for 0.5% of the partners and then joins a million of them by nested loops).
        allowed = SQL(
            """(%(address)s) AND c.state IS DISTINCT FROM 'opt_out' AND NOT (%(blacklisted)s)
               AND %(consent)s AND (c.paused_until IS NULL OR c.paused_until <= %(at)s)""",
            address=address,
            blacklisted=blacklisted,
            consent=SQL("c.state = 'opt_in'") if policy == "opt_in" else SQL("TRUE"),
            at=at,
        )
        return from_clause, reason, allowed

    @api.model
    def _check_contact(self, partner_ids, channel, purpose=None, company=None, at=None):
        """May we contact these customers on this channel for this purpose now?

        One query for all customers: ``{partner_id: reason}``, reason False when contact
        is allowed (see ``_contact_sql``). Every sending path calls it at send time.
        """
        from_clause, reason, _allowed = self._contact_sql(channel, purpose, company, at)
        self.env.cr.execute(
            SQL(
                "SELECT p.id, %s FROM %s WHERE p.id = ANY(%s)",
                reason,
                from_clause,
                list(partner_ids),
            )
        )
        return {partner_id: reason or False for partner_id, reason in self.env.cr.fetchall()}

    @api.model
    def _contactable_query(self, channel, purpose=None, company=None):
        """SQL selecting the ids of every partner that may be contacted now."""
        from_clause, _reason, allowed = self._contact_sql(channel, purpose, company)
        return SQL("(SELECT p.id FROM %s WHERE %s)", from_clause, allowed)

    @api.model
    def _get_contactable(self, partner_ids, channel, purpose=None, company=None):
        """The ids among ``partner_ids`` that may be contacted now."""
        checks = self._check_contact(partner_ids, channel, purpose, company)
        return [partner_id for partner_id, reason in checks.items() if not reason]
