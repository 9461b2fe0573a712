from odoo import api, fields, models
from odoo.tools import SQL


class MailingMailing(models.Model):
    _inherit = "mailing.mailing"

    ecrm_segment_id = fields.Many2one(
        "ecrm.segment",
        string="Customer Segment",
        help="Send to this e-CRM segment, evaluated when the mailing is sent.",
    )

    ecrm_campaign_id = fields.Many2one(
        "ecrm.campaign", string="e-CRM Campaign", index="btree_not_null", readonly=True
    )

    @api.onchange("ecrm_segment_id")
    def _onchange_ecrm_segment_id(self):
        if self.ecrm_segment_id:
            self.mailing_model_id = self.env["ir.model"]._get("res.partner")

    def _get_recipients_domain(self):
        if self.ecrm_campaign_id and self.mailing_model_real == "res.partner":
            # The campaign's contacted customers on this mailing's channel.
            self.env["ecrm.campaign.recipient"].flush_model()
            code = "sms" if self.mailing_type == "sms" else "email"
            return [
                (
                    "id",
                    "in",
                    SQL(
                        """(SELECT r.partner_id FROM ecrm_campaign_recipient r
                             JOIN ecrm_channel c ON c.id = r.channel_id
                            WHERE r.campaign_id = %s AND r."group" = 'target'
                              AND r.state IN ('planned', 'sent') AND c.code = %s)""",
                        self.ecrm_campaign_id.id,
                        code,
                    ),
                )
            ]
        if self.ecrm_segment_id and self.mailing_model_real == "res.partner":
            return [("id", "in", self.ecrm_segment_id._search_partners().subselect())]
        return super()._get_recipients_domain()

    def _get_remaining_recipients(self):
        """Consent is checked when the mailing is sent, not only when it is composed."""
        res_ids = super()._get_remaining_recipients()
        if self.mailing_model_real != "res.partner" or not res_ids:
            return res_ids
        code = "sms" if self.mailing_type == "sms" else "email"
        channel = self.env["ecrm.channel"].sudo()._get_by_code(code)  # sudo: configuration
        if not channel:
            return res_ids
        company = (
            self.ecrm_campaign_id.company_id or self.ecrm_segment_id.company_id or self.env.company
        )
        allowed = set(self.env["ecrm.consent"]._get_contactable(res_ids, channel, company=company))
        return [res_id for res_id in res_ids if res_id in allowed]
