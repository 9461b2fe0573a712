from odoo import api, fields, models

from .ecrm_consent import SKIP_REASONS


class EcrmCampaignRecipient(models.Model):
    """One customer of a campaign: their group, channel, offer, touch and result."""

    _name = "ecrm.campaign.recipient"
    _description = "Campaign Recipient"
    _order = "campaign_id, id"
    _rec_name = "partner_id"
    _check_company_auto = True

    campaign_id = fields.Many2one(
        "ecrm.campaign", required=True, index=True, ondelete="cascade", check_company=True
    )
    partner_id = fields.Many2one(
        "res.partner", string="Customer", required=True, index=True, check_company=True
    )
    company_id = fields.Many2one("res.company", required=True, index=True)
    currency_id = fields.Many2one(related="company_id.currency_id")
    stratum_id = fields.Many2one(
        "ecrm.rfm.segment", string="RFM Segment", help="Stratum of the holdout draw."
    )
    contact_id = fields.Many2one(
        "res.partner",
        string="Contacted Person",
        check_company=True,
        help="Whose address the campaign uses: the customer's own for the channel or, when "
        "it has none, the first of its contact persons that has one.",
    )
    group = fields.Selection(
        [("target", "Contacted group"), ("holdout", "Holdout")],
        required=True,
        default="target",
        help="Contacted group: the customers the campaign contacts. Holdout: a random share "
        "of the customers who could have been contacted, kept out to measure the effect.",
    )
    state = fields.Selection(
        [("planned", "Planned"), ("holdout", "Holdout"), ("skipped", "Skipped"), ("sent", "Sent")],
        required=True,
        default="planned",
        index=True,
        help="Skipped: could not be contacted (no consent, no address, contact pressure), "
        "when prepared or when sent; a skipped customer belongs to neither group compared.",
    )
    skip_reason = fields.Selection([*SKIP_REASONS, ("capped", "Contact pressure cap")])
    channel_id = fields.Many2one("ecrm.channel")
    coupon_id = fields.Many2one(
        "loyalty.card", string="Coupon", ondelete="set null", check_company=True
    )
    coupon_code = fields.Char(related="coupon_id.code")
    activity_id = fields.Many2one("mail.activity", ondelete="set null")
    sent_at = fields.Datetime()
    converted = fields.Boolean()
    order_id = fields.Many2one("sale.order", string="First Order", ondelete="set null")
    revenue = fields.Monetary()

    _sql_constraints = [
        (
            "campaign_partner_uniq",
            "unique(campaign_id, partner_id)",
            "A customer is once in a campaign.",
        ),
    ]

    @api.depends("partner_id", "campaign_id")
    def _compute_display_name(self):
        for recipient in self:
            recipient.display_name = recipient.partner_id.display_name or ""
