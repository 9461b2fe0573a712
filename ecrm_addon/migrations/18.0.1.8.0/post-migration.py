from odoo import SUPERUSER_ID, api
from odoo.tools import SQL
from odoo.tools.mail import html_sanitize


def migrate(cr, version):
    """18.0.1.8.0: campaign email bodies are sanitized as Email Marketing's are; bodies
    stored before, unsanitized, may hold scripts that ran in the next reader's session.
    The holdout is a state of its own, no longer a reason to skip."""
    cr.execute(
        SQL(
            """UPDATE ecrm_campaign_recipient SET state = 'holdout', skip_reason = NULL
                WHERE "group" = 'holdout' AND state = 'skipped' AND skip_reason = 'holdout'"""
        )
    )
    # Recipients given a channel are reached on a contact: before, the customer itself.
    cr.execute(
        SQL(
            """UPDATE ecrm_campaign_recipient SET contact_id = partner_id
                WHERE contact_id IS NULL AND channel_id IS NOT NULL"""
        )
    )
    # Both groups' attribution windows now start when the campaign was sent.
    cr.execute(
        SQL(
            """UPDATE ecrm_campaign_recipient h SET sent_at = s.sent_at
                 FROM (SELECT campaign_id, min(sent_at) AS sent_at
                         FROM ecrm_campaign_recipient WHERE state = 'sent'
                     GROUP BY campaign_id) s
                WHERE h.campaign_id = s.campaign_id AND h.state = 'holdout'
                  AND h.sent_at IS NULL"""
        )
    )
    env = api.Environment(cr, SUPERUSER_ID, {})
    field = env["ecrm.campaign"]._fields["email_body"]
    cr.execute(SQL("SELECT id, email_body FROM ecrm_campaign WHERE email_body IS NOT NULL"))
    for campaign_id, body in cr.fetchall():
        clean = html_sanitize(
            body,
            silent=True,
            sanitize_tags=field.sanitize_tags,
            sanitize_attributes=field.sanitize_attributes,
            sanitize_style=field.sanitize_style,
            sanitize_conditional_comments=field.sanitize_conditional_comments,
            output_method=field.sanitize_output_method,
        )
        if clean != body:
            cr.execute(
                SQL("UPDATE ecrm_campaign SET email_body = %s WHERE id = %s", clean, campaign_id)
            )
