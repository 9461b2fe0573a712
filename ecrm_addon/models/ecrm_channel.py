from odoo import api, fields, models
from odoo.exceptions import ValidationError


class EcrmChannel(models.Model):
    _name = "ecrm.channel"
    _description = "Contact Channel"
    _order = "sequence, id"

    name = fields.Char(required=True, translate=True)
    code = fields.Char(
        required=True,
        help="Stable technical code used by the API and the capture rules, e.g. 'email'.",
    )
    sequence = fields.Integer(default=10)
    active = fields.Boolean(default=True)
    icon = fields.Char(
        default="fa-comments",
        help="Font Awesome icon class shown in the timeline, e.g. 'fa-phone'.",
    )
    color = fields.Integer()
    is_electronic = fields.Boolean(
        string="Electronic",
        help="Contacts on this channel are electronic (email, web, chat, SMS, social).",
    )
    medium_id = fields.Many2one(
        "utm.medium",
        string="UTM Medium",
        ondelete="set null",
        help="Orders and mailings whose UTM medium is this one are logged on this channel.",
    )
    cost_per_contact = fields.Float(
        company_dependent=True,
        digits="Product Price",
        help="What one contact on this channel costs, in the company's currency; "
        "used to compute the cost and ROI of campaigns.",
    )
    company_id = fields.Many2one(
        "res.company",
        help="Leave empty to use this channel in every company.",
    )

    _sql_constraints = [
        ("code_uniq", "unique(code)", "The code of a channel must be unique."),
    ]

    @api.constrains("code")
    def _check_code(self):
        for channel in self:
            if not channel.code.replace("_", "").isalnum() or channel.code != channel.code.lower():
                raise ValidationError(
                    self.env._(
                        "The channel code '%s' may only hold lowercase letters, digits and "
                        "underscores.",
                        channel.code,
                    )
                )

    @api.model
    def _get_by_code(self, code):
        """The active channel with this code, visible to the current company."""
        return self.search([("code", "=", code)], limit=1)
