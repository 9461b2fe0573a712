from odoo import fields, models


class EcrmCampaignChannel(models.Model):
    _name = "ecrm.campaign.channel"
    _description = "Campaign Channel"
    _order = "campaign_id, sequence, id"
    _check_company_auto = True

    campaign_id = fields.Many2one(
        "ecrm.campaign", required=True, index=True, ondelete="cascade", check_company=True
    )
    company_id = fields.Many2one(
        related="campaign_id.company_id", store=True, index=True, precompute=True
    )
    sequence = fields.Integer(default=10)
    channel_id = fields.Many2one(
        "ecrm.channel",
        required=True,
        domain="[('code', 'in', ('email', 'sms', 'phone', 'letter'))]",
        check_company=True,
    )

    _sql_constraints = [
        ("channel_uniq", "unique(campaign_id, channel_id)", "Each channel is once in a campaign.")
    ]


class EcrmCampaignOffer(models.Model):
    _name = "ecrm.campaign.offer"
    _description = "Campaign Offer by Tier"
    _check_company_auto = True

    campaign_id = fields.Many2one(
        "ecrm.campaign", required=True, index=True, ondelete="cascade", check_company=True
    )
    company_id = fields.Many2one(
        related="campaign_id.company_id", store=True, index=True, precompute=True
    )
    tier_id = fields.Many2one("ecrm.loyalty.tier", required=True, check_company=True)
    program_id = fields.Many2one(
        "loyalty.program", string="Coupon Program", required=True, check_company=True
    )
