from odoo import fields, models


class EcrmCampaignChannel(models.Model):
    _name = "ecrm.campaign.channel"
    _description = "Campaign Channel"
    _order = "campaign_id, sequence, id"

    campaign_id = fields.Many2one("ecrm.campaign", required=True, index=True, ondelete="cascade")
    sequence = fields.Integer(default=10)
    channel_id = fields.Many2one(
        "ecrm.channel",
        required=True,
        domain="[('code', 'in', ('email', 'sms', 'phone', 'letter'))]",
    )

    _sql_constraints = [
        ("channel_uniq", "unique(campaign_id, channel_id)", "Each channel is once in a campaign.")
    ]


class EcrmCampaignOffer(models.Model):
    _name = "ecrm.campaign.offer"
    _description = "Campaign Offer by Tier"

    campaign_id = fields.Many2one("ecrm.campaign", required=True, index=True, ondelete="cascade")
    tier_id = fields.Many2one("ecrm.loyalty.tier", required=True)
    program_id = fields.Many2one("loyalty.program", string="Coupon Program", required=True)
