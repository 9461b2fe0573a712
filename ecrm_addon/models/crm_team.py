from odoo import fields, models


class CrmTeam(models.Model):
    _inherit = "crm.team"

    ecrm_channel_id = fields.Many2one(
        "ecrm.channel",
        string="Order Channel",
        help="e-CRM logs the orders this team confirms on this channel, unless the order's "
        "UTM medium names another one.",
    )
