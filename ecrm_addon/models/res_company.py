from odoo import fields, models


class ResCompany(models.Model):
    _inherit = "res.company"

    ecrm_capture_email = fields.Boolean(
        string="Capture Chatter Emails",
        default=True,
        help="Log emails exchanged with customers in the chatter of customers, sales orders "
        "and leads.",
    )
    ecrm_capture_order = fields.Boolean(
        string="Capture Order Confirmations",
        default=True,
        help="Log each confirmed sales order as an inbound interaction.",
    )
    ecrm_capture_mailing = fields.Boolean(
        string="Capture Mailings",
        default=True,
        help="Log each email and SMS of a mass mailing, with its opens, clicks, replies and "
        "bounces.",
    )
    ecrm_capture_sms = fields.Boolean(
        string="Capture SMS",
        default=True,
        help="Log SMS sent to customers from a document.",
    )
    ecrm_capture_call = fields.Boolean(
        string="Capture Calls",
        default=True,
        help="Log phone-call activities marked as done.",
    )
    ecrm_order_channel_id = fields.Many2one(
        "ecrm.channel",
        string="Default Order Channel",
        help="Channel of confirmed orders when neither their UTM medium nor their sales team "
        "names one. Orders confirmed by the customer online are logged on the web channel.",
    )
    ecrm_consent_default_policy = fields.Selection(
        [("opt_in", "Explicit opt-in required"), ("opt_out", "Allowed unless opted out")],
        string="Default Consent Policy",
        default="opt_out",
        help="For channels without a policy of their own: contact customers only once they "
        "opted in, or until they opt out (soft opt-in for existing customers).",
    )
    ecrm_pressure_max_touches = fields.Integer(
        string="Maximum Marketing Touches",
        default=4,
        help="A customer gets at most this many marketing touches (campaigns and mailings, "
        "all channels) per period; 0 for no cap.",
    )
    ecrm_pressure_days = fields.Integer(string="Contact Pressure Period (days)", default=30)
    ecrm_api_unknown_policy = fields.Selection(
        [("reject", "Reject the event"), ("inbox", "Park it in the Unmatched inbox")],
        string="Unknown Customers (other sources)",
        required=True,
        default="reject",
        help="What the API does with an event whose customer cannot be matched, when its "
        "source is not configured in e-CRM > Configuration > API Sources.",
    )
