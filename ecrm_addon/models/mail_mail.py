from odoo import models


class MailMail(models.Model):
    _inherit = "mail.mail"

    def _prepare_outgoing_list(self, mail_server=False, recipients_follower_status=None):
        """A campaign email's preference centre link becomes the recipient's own."""
        email_list = super()._prepare_outgoing_list(
            mail_server=mail_server, recipients_follower_status=recipients_follower_status
        )
        campaign = self.mailing_id.ecrm_campaign_id
        if not campaign or not self.res_id or self.model != "res.partner":
            return email_list
        # sudo: the queue sends as superuser already; the partner is the mail's recipient
        partner = self.env["res.partner"].sudo().browse(self.res_id)
        for email_values in email_list:
            email_values["body"] = campaign._set_preference_link(email_values.get("body"), partner)
        return email_list
