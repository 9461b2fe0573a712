from odoo import api, fields, models
from odoo.exceptions import ValidationError


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
    ecrm_api_unknown_policy = fields.Selection(
        related="company_id.ecrm_api_unknown_policy", readonly=False
    )
    ecrm_api_max_events = fields.Integer(
        string="Events per Request",
        config_parameter="ecrm_addon.api_max_events",
        default=1000,
        help="Most events one request to the ingestion API may carry; larger requests are "
        "refused with HTTP 413.",
    )
    ecrm_api_web_session_minutes = fields.Integer(
        string="Web Visit Window (minutes)",
        config_parameter="ecrm_addon.api_web_session_minutes",
        default=30,
        help="Web events of the same visitor and customer less than this many minutes apart "
        "are one web visit.",
    )
    ecrm_api_auth_max_failures = fields.Integer(
        string="Failed Authentications",
        config_parameter="ecrm_addon.api_auth_max_failures",
        default=10,
        help="After this many failed authentications from one address within the window, "
        "the API answers HTTP 429 to that address until the window has passed.",
    )
    ecrm_api_auth_window_seconds = fields.Integer(
        string="Failure Window (seconds)",
        config_parameter="ecrm_addon.api_auth_window_seconds",
        default=300,
    )

    @api.constrains(
        "ecrm_api_max_events",
        "ecrm_api_web_session_minutes",
        "ecrm_api_auth_max_failures",
        "ecrm_api_auth_window_seconds",
    )
    def _check_ecrm_api_settings(self):
        for settings in self:
            if (
                min(
                    settings.ecrm_api_max_events,
                    settings.ecrm_api_web_session_minutes,
                    settings.ecrm_api_auth_max_failures,
                    settings.ecrm_api_auth_window_seconds,
                )
                < 1
            ):
                raise ValidationError(
                    self.env._("The limits of the ingestion API must be positive numbers.")
                )
