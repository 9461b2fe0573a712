from odoo import api, fields, models, tools
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

    @api.model_create_multi
    def create(self, vals_list):
        self.env.registry.clear_cache()  # _get_id_by_code
        return super().create(vals_list)

    def write(self, vals):
        if {"code", "active", "company_id"} & set(vals):
            self.env.registry.clear_cache()  # _get_id_by_code
        return super().write(vals)

    def unlink(self):
        self.env.registry.clear_cache()  # _get_id_by_code
        return super().unlink()

    @api.model
    @tools.ormcache("code")
    def _get_id_by_code(self, code):
        # sudo: channels are configuration; the company is checked by _get_by_code
        channel = self.sudo().search([("code", "=", code)], limit=1)
        return channel.id, channel.company_id.id

    @api.model
    def _get_by_code(self, code):
        """The active channel with this code, if visible to the current company.

        Capture paths call it for every message and order: the lookup is cached.
        """
        channel_id, company_id = self._get_id_by_code(code)
        if not channel_id or company_id not in (False, self.env.company.id):
            return self.browse()
        return self.browse(channel_id)
