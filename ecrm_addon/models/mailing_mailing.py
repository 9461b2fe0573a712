from odoo import api, fields, models
from odoo.exceptions import ValidationError
from odoo.osv import expression
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

    @api.constrains("ecrm_segment_id", "ecrm_campaign_id")
    def _check_ecrm_access(self):
        """The queue sends as superuser, without record rules: whoever links a mailing to
        a segment or a campaign must be allowed to read it, in their current companies
        (a segment of another company would otherwise be mailed, its addresses shown)."""
        if self.env.su:
            return
        for mailing in self:
            for record in (mailing.ecrm_segment_id, mailing.ecrm_campaign_id):
                if record and not record.has_access("read"):
                    raise ValidationError(
                        self.env._(
                            "You cannot send the mailing '%(mailing)s' to '%(target)s': it "
                            "belongs to a company you are not working in, or you have no "
                            "e-CRM rights.",
                            mailing=mailing.subject or mailing.display_name,
                            target=record.sudo().display_name,
                        )
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
                        """(SELECT r.contact_id
                              FROM ecrm_campaign_recipient r
                             JOIN ecrm_channel c ON c.id = r.channel_id
                            WHERE r.campaign_id = %s AND r."group" = 'target'
                              AND r.state IN ('planned', 'sent') AND c.code = %s)""",
                        self.ecrm_campaign_id.id,
                        code,
                    ),
                )
            ]
        if self.ecrm_segment_id and self.mailing_model_real == "res.partner":
            segment = self.ecrm_segment_id
            if self.user_id and segment.company_id not in self.user_id.company_ids:
                # The queue runs as superuser: a segment of a company the mailing's
                # responsible does not work in is never mailed (an older mailing may
                # carry one).
                return expression.FALSE_DOMAIN
            return [("id", "in", segment._search_partners().subselect())]
        return super()._get_recipients_domain()

    def _get_mass_mailing_context(self):
        """A campaign's email renders its placeholders (coupon code, preference link) for
        the campaign."""
        context = super()._get_mass_mailing_context()
        if self.ecrm_campaign_id:
            context["ecrm_campaign_id"] = self.ecrm_campaign_id.id
        return context

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
        checks = self.env["ecrm.consent"]._check_contact(res_ids, channel, company=company)
        refused = {res_id: reason for res_id, reason in checks.items() if reason}
        if refused and self.ecrm_campaign_id:
            # Refused at delivery: the recipient is skipped with the reason, not "sent".
            self.ecrm_campaign_id._skip_at_delivery(refused, channel)
        return [res_id for res_id in res_ids if res_id not in refused]
