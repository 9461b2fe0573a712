from odoo import api, fields, models, tools
from odoo.exceptions import UserError


class EcrmCampaignEmailPreview(models.TransientModel):
    """The campaign's email as one customer will receive it, and a test send of it."""

    _name = "ecrm.campaign.email.preview"
    _description = "Campaign Email Preview"

    campaign_id = fields.Many2one("ecrm.campaign", required=True, ondelete="cascade")
    partner_id = fields.Many2one(
        "res.partner",
        string="Preview For",
        help="The customer (or contact person) whose email is shown: after preparation, a "
        "recipient of the campaign, with their coupon code.",
    )
    email_to = fields.Char(
        "Send a Test To",
        help="Addresses, separated by commas, that receive the email shown here.",
    )
    subject = fields.Char(compute="_compute_preview")
    body = fields.Html(compute="_compute_preview", sanitize=True, sanitize_style=True)

    @api.model
    def default_get(self, fields_list):
        values = super().default_get(fields_list)
        campaign = self.env["ecrm.campaign"].browse(values.get("campaign_id"))
        if campaign and "partner_id" in fields_list and not values.get("partner_id"):
            email = self.env["ecrm.channel"]._get_by_code("email")
            recipient = self.env["ecrm.campaign.recipient"].search(
                [
                    ("campaign_id", "=", campaign.id),
                    ("channel_id", "=", email.id),
                    ("state", "in", ("planned", "sent")),
                ],
                limit=1,
            )
            values["partner_id"] = (
                recipient.contact_id.id
                or self.env["res.partner"]
                .search(campaign.segment_id._get_partner_domain(), limit=1)
                .id
            )
        if "email_to" in fields_list and not values.get("email_to"):
            values["email_to"] = self.env.user.email
        return values

    @api.depends("campaign_id", "partner_id")
    def _compute_preview(self):
        for preview in self:
            partner = preview.partner_id
            if preview.campaign_id and partner.id:
                preview.subject, preview.body = preview.campaign_id._render_email(partner)
            else:
                preview.subject = preview.body = False

    def action_send_test(self):
        self.ensure_one()
        addresses = [tools.email_normalize(a) for a in tools.email_split(self.email_to or "")]
        if not addresses or not all(addresses):
            raise UserError(self.env._("Enter the email addresses the test goes to."))
        if not self.partner_id:
            raise UserError(self.env._("Choose the customer whose email is sent as a test."))
        subject, body = self.campaign_id._render_email(self.partner_id)
        # sudo: a test email, as Email Marketing's own test wizard sends it, to the
        # addresses typed here only; nothing is sent to the customer
        mail = (
            self.env["mail.mail"]
            .sudo()
            .create(
                {
                    "subject": self.env._("[Test] %s", subject),
                    "body_html": body,
                    "email_from": self.env.user.email_formatted,
                    "email_to": ",".join(addresses),
                    "auto_delete": True,
                }
            )
        )
        mail.send()
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "type": "success",
                "message": self.env._("Test email sent to %s.", ", ".join(addresses)),
                "next": {"type": "ir.actions.act_window_close"},
            },
        }
