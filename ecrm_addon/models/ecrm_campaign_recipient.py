from odoo import api, fields, models, tools
from odoo.tools import SQL

from .ecrm_consent import SKIP_REASONS

DELIVERY_STATES = [
    ("pending", "To deliver"),
    ("sent", "Sent"),
    ("opened", "Opened"),
    ("clicked", "Clicked"),
    ("replied", "Replied"),
    ("bounced", "Bounced"),
    ("failed", "Failed"),
    ("done", "Call made"),
    ("printed", "Printed"),
]
# Touches that reached the customer: "contacted".
DELIVERED = ("sent", "opened", "clicked", "replied", "done", "printed")
# A delivery only moves forward: a late "open" never hides a click or a reply.
DELIVERY_RANK = {
    "pending": 0,
    "sent": 1,
    "opened": 2,
    "clicked": 3,
    "replied": 4,
    "bounced": 5,
    "failed": 5,
    "done": 5,
    "printed": 5,
}


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
        "it has none, the first of its contact persons that has one. Set for every "
        "customer given a channel.",
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
    delivery = fields.Selection(
        DELIVERY_STATES,
        index=True,
        readonly=True,
        help="What became of the touch: emails and SMS from their mailing traces, calls "
        "when the call activity is marked done, letters when printed. Empty before the "
        "campaign is sent.",
    )
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

    def init(self):
        # The mailing queue finds a campaign's recipient by the person it mailed, once
        # per message (delivery, coupon code): an index, not a scan of the campaign.
        tools.create_index(
            self.env.cr,
            "ecrm_campaign_recipient_contact_idx",
            self._table,
            ["campaign_id", "contact_id"],
            where="contact_id IS NOT NULL",
        )
        return super().init()

    @api.depends("partner_id", "campaign_id")
    def _compute_display_name(self):
        for recipient in self:
            recipient.display_name = recipient.partner_id.display_name or ""

    @api.model
    def _set_delivery(self, delivery, where):
        """Move the delivery of the recipients matching the SQL condition ``where`` (on
        ``r``) forward to ``delivery``, in one UPDATE."""
        lower = [state for state, rank in DELIVERY_RANK.items() if rank < DELIVERY_RANK[delivery]]
        self.flush_model()
        self.env.cr.execute(
            SQL(
                """
                UPDATE ecrm_campaign_recipient r
                   SET delivery = %(delivery)s, write_date = now() at time zone 'UTC'
                 WHERE r.state = 'sent' AND (r.delivery IS NULL OR r.delivery = ANY(%(lower)s))
                   AND %(where)s
                """,
                delivery=delivery,
                lower=lower,
                where=where,
            )
        )
        if self.env.cr.rowcount:
            self.invalidate_model(["delivery", "write_date"])
            self.env["ecrm.campaign"].invalidate_model()  # their counts
