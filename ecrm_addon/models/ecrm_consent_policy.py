from odoo import api, fields, models

POLICIES = [
    ("opt_in", "Explicit opt-in required"),
    ("opt_out", "Allowed unless opted out"),
]


class EcrmConsentPolicy(models.Model):
    """How a company may contact customers on a channel for a purpose."""

    _name = "ecrm.consent.policy"
    _description = "Consent Policy"
    _order = "company_id, channel_id, id"
    _check_company_auto = True

    company_id = fields.Many2one(
        "res.company", required=True, index=True, default=lambda self: self.env.company
    )
    channel_id = fields.Many2one("ecrm.channel", required=True, ondelete="cascade")
    purpose_id = fields.Many2one(
        "ecrm.consent.purpose",
        ondelete="cascade",
        help="Leave empty for every purpose without a policy of its own.",
    )
    policy = fields.Selection(
        POLICIES,
        required=True,
        default="opt_in",
        help="Explicit opt-in: only customers who agreed are contacted. Allowed unless opted "
        "out: existing customers are contacted until they say no (soft opt-in).",
    )

    _sql_constraints = [
        (
            "company_channel_purpose_uniq",
            "unique(company_id, channel_id, purpose_id)",
            "One policy per company, channel and purpose.",
        ),
    ]

    @api.model
    def _get_policy(self, company, channel, purpose):
        """The policy that applies: the purpose's own, the channel's, or the company default."""
        policies = self.sudo().search(  # sudo: policies are configuration read at send time
            [
                ("company_id", "=", company.id),
                ("channel_id", "=", channel.id),
                ("purpose_id", "in", [purpose.id, False]),
            ]
        )
        own = policies.filtered(lambda p: p.purpose_id == purpose)
        return (own or policies)[:1].policy or company.ecrm_consent_default_policy or "opt_out"
