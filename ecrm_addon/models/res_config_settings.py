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
    ecrm_score_order_states = fields.Selection(
        [("sale", "Confirmed orders"), ("sale,sent", "Confirmed orders and sent quotations")],
        string="Orders Counted",
        config_parameter="ecrm_addon.score_order_states",
        default="sale",
        help="Which orders count as purchases for recency, frequency and monetary value. "
        "Cancelled orders never count.",
    )
    ecrm_loyalty_weight_recency = fields.Integer(
        "Recency Weight", config_parameter="ecrm_addon.loyalty_weight_recency", default=30
    )
    ecrm_loyalty_weight_frequency = fields.Integer(
        "Frequency Weight", config_parameter="ecrm_addon.loyalty_weight_frequency", default=25
    )
    ecrm_loyalty_weight_monetary = fields.Integer(
        "Monetary Weight", config_parameter="ecrm_addon.loyalty_weight_monetary", default=25
    )
    ecrm_loyalty_weight_engagement = fields.Integer(
        "Engagement Weight", config_parameter="ecrm_addon.loyalty_weight_engagement", default=20
    )
    ecrm_clv_horizon_days = fields.Integer(
        "Lifetime Value Horizon (days)", config_parameter="ecrm_addon.clv_horizon_days", default=365
    )
    ecrm_clv_discount_rate = fields.Float(
        "Yearly Discount Rate",
        config_parameter="ecrm_addon.clv_discount_rate",
        default=0.10,
        help="Future orders are discounted at this yearly rate (0.10 = 10%).",
    )
    ecrm_consent_default_policy = fields.Selection(
        related="company_id.ecrm_consent_default_policy", readonly=False
    )
    ecrm_consent_text_version = fields.Char(
        "Consent Text Version",
        config_parameter="ecrm_addon.consent_text_version",
        default="1",
        help="Recorded with every consent given in the preference centre, as proof of what "
        "the customer read.",
    )
    ecrm_pressure_max_touches = fields.Integer(
        related="company_id.ecrm_pressure_max_touches", readonly=False
    )
    ecrm_pressure_days = fields.Integer(related="company_id.ecrm_pressure_days", readonly=False)
