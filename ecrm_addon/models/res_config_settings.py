from odoo import fields, models


class ResConfigSettings(models.TransientModel):
    _inherit = "res.config.settings"

    ecrm_capture_email = fields.Boolean(related="company_id.ecrm_capture_email", readonly=False)
    ecrm_capture_order = fields.Boolean(related="company_id.ecrm_capture_order", readonly=False)
    ecrm_capture_mailing = fields.Boolean(related="company_id.ecrm_capture_mailing", readonly=False)
    ecrm_capture_sms = fields.Boolean(related="company_id.ecrm_capture_sms", readonly=False)
    ecrm_capture_call = fields.Boolean(related="company_id.ecrm_capture_call", readonly=False)
    ecrm_order_channel_id = fields.Many2one(
        related="company_id.ecrm_order_channel_id", readonly=False
    )
    ecrm_future_tolerance_minutes = fields.Integer(
        string="Future Tolerance (minutes)",
        config_parameter="ecrm_addon.future_tolerance_minutes",
        default=10,
        help="How far in the future an interaction may be dated (clock differences between "
        "systems).",
    )
