from odoo import fields, models
from odoo.tools import SQL

from .mail_thread import CAPTURED_THREAD_MODELS


class MailActivity(models.Model):
    _inherit = "mail.activity"

    def _action_done(self, feedback=False, attachment_ids=None):
        # Read before super(): done activities are deleted.
        vals_list = self._ecrm_prepare_call_vals(feedback)
        # The campaign calls made: their recipients are contacted.
        self.env["ecrm.campaign.recipient"].sudo()._set_delivery(  # sudo: any assignee
            "done", SQL("r.activity_id = ANY(%s)", self.ids)
        )
        result = super()._action_done(feedback=feedback, attachment_ids=attachment_ids)
        self.env["ecrm.interaction"]._capture(vals_list)
        return result

    def _ecrm_prepare_call_vals(self, feedback):
        """Interaction values for the phone-call activities in self, one per customer."""
        calls = self.filtered(
            lambda a: a.activity_category == "phonecall" and a.res_model in CAPTURED_THREAD_MODELS
        )
        if not calls:
            return []
        phone = self.env["ecrm.channel"].sudo()._get_by_code("phone")  # sudo: configuration
        vals_list = []
        for model in set(calls.mapped("res_model")):
            model_calls = calls.filtered(lambda a, model=model: a.res_model == model)
            # sudo: whoever may mark an activity done may log it, as mail does
            records = self.env[model].sudo().browse(model_calls.mapped("res_id")).exists()
            by_id = {record.id: record for record in records}
            for activity in model_calls:
                record = by_id.get(activity.res_id)
                partner = record and record._ecrm_get_customer()
                if not partner or not phone:
                    continue
                company = record._ecrm_message_company(record)
                if not company.ecrm_capture_call:
                    continue
                vals_list.append(
                    {
                        "partner_id": partner.id,
                        "channel_id": phone.id,
                        "direction": "outbound",
                        "date": fields.Datetime.now(),
                        "subject": activity.summary or activity.activity_type_id.name,
                        "summary": feedback or activity.note,
                        "outcome": "done",
                        "user_id": activity.user_id.id or self.env.user.id,
                        "company_id": company.id,
                        "sale_order_id": record.id if model == "sale.order" else False,
                        "res_model": activity._name,
                        "res_id": activity.id,
                    }
                )
        return vals_list
