from odoo import api, models
from odoo.tools import SQL

# Outcome of the interaction logged for a trace, from the trace's status.
TRACE_OUTCOMES = {
    "outgoing": "sent",
    "pending": "sent",
    "sent": "sent",
    "open": "opened",
    "reply": "replied",
    "bounce": "bounced",
    "error": "failed",
}
# Delivery of a campaign recipient, from its trace's status (queued ones stay "to deliver").
TRACE_DELIVERIES = {
    "sent": "sent",
    "open": "opened",
    "reply": "replied",
    "bounce": "bounced",
    "error": "failed",
    "cancel": "failed",
}
# An outcome only moves forward: a late "open" never hides a click or a reply.
OUTCOME_RANK = {"sent": 0, "opened": 1, "clicked": 2, "replied": 3, "bounced": 4, "failed": 4}


class MailingTrace(models.Model):
    _inherit = "mailing.trace"

    @api.model_create_multi
    def create(self, vals_list):
        traces = super().create(vals_list)
        traces._ecrm_capture()
        for status, delivery in TRACE_DELIVERIES.items():
            traces.filtered(lambda t, s=status: t.trace_status == s)._ecrm_set_delivery(delivery)
        return traces

    def write(self, vals):
        result = super().write(vals)
        if "trace_status" in vals or vals.get("links_click_datetime"):
            status = vals.get("trace_status")
            outcome = "clicked" if vals.get("links_click_datetime") else TRACE_OUTCOMES.get(status)
            if outcome:
                self._ecrm_update_outcome(outcome)
            delivery = (
                "clicked" if vals.get("links_click_datetime") else TRACE_DELIVERIES.get(status)
            )
            if delivery:
                self._ecrm_set_delivery(delivery)
        return result

    def _ecrm_set_delivery(self, delivery):
        """The campaign recipients these traces reached: their delivery moves forward.

        Mail by mail, the queue marks each trace sent: one UPDATE that finds the
        recipient through the trace's mailing in SQL, no read of the mailing's record."""
        if not self.ids:
            return
        self.flush_recordset(["mass_mailing_id", "model", "res_id"])
        self.env["mailing.mailing"].flush_model(["ecrm_campaign_id"])
        self.env["ecrm.campaign.recipient"]._set_delivery(
            delivery,
            SQL(
                """(r.campaign_id, r.contact_id) IN (
                       SELECT m.ecrm_campaign_id, t.res_id
                         FROM mailing_trace t
                         JOIN mailing_mailing m ON m.id = t.mass_mailing_id
                        WHERE t.id = ANY(%s) AND t.model = 'res.partner'
                          AND m.ecrm_campaign_id IS NOT NULL)""",
                self.ids,
            ),
        )

    def _ecrm_capture(self):
        """Log each email or SMS of a mass mailing sent to a customer, one batch per batch."""
        traces = self.filtered(
            lambda t: t.trace_status not in ("cancel", "error")
            and t.mass_mailing_id
            and (t._ecrm_company().ecrm_capture_mailing or t.mass_mailing_id.ecrm_campaign_id)
        )
        if not traces:
            return
        customers = traces._ecrm_get_customers()
        Channel = self.env["ecrm.channel"].sudo()  # sudo: channels are configuration
        channels = {"mail": Channel._get_by_code("email"), "sms": Channel._get_by_code("sms")}
        vals_list = []
        for trace in traces:
            partner = customers.get(trace)
            channel = channels.get(trace.trace_type)
            if not partner or not channel:
                continue
            mailing = trace.mass_mailing_id
            vals_list.append(
                {
                    "partner_id": partner.id,
                    "channel_id": channel.id,
                    "direction": "outbound",
                    "date": trace.create_date,
                    "subject": mailing.subject or mailing.name,
                    "outcome": TRACE_OUTCOMES.get(trace.trace_status, "sent"),
                    "user_id": mailing.user_id.id,
                    "company_id": trace._ecrm_company().id,
                    "res_model": trace._name,
                    "res_id": trace.id,
                    "capture_mode": "campaign" if mailing.ecrm_campaign_id else "automatic",
                    "campaign_id": mailing.campaign_id.id,
                    "source_id": mailing.source_id.id,
                    "medium_id": mailing.medium_id.id,
                }
            )
        self.env["ecrm.interaction"]._capture(vals_list, new_sources=True)

    def _ecrm_company(self):
        """Mailings have no company: the campaign's, or the mailing responsible's."""
        mailing = self.mass_mailing_id
        return mailing.ecrm_campaign_id.company_id or mailing.user_id.company_id or self.env.company

    def _ecrm_get_customers(self):
        """{trace: partner}, resolved per document model with one query per model.

        Partners are themselves; documents with a customer (orders, leads) give it; other
        recipients (mailing contacts) are matched on their normalized email or SMS number.
        """
        customers = {}
        for model in set(self.mapped("model")):
            traces = self.filtered(lambda t, model=model: t.model == model)
            if model not in self.env:
                continue
            records = self.env[model].sudo().browse(traces.mapped("res_id")).exists()
            if model == "res.partner":
                by_id = {record.id: record for record in records}
            elif (
                "partner_id" in records._fields and records._fields["partner_id"].type == "many2one"
            ):
                by_id = {record.id: record.partner_id for record in records}
            else:
                by_id = {}
            for trace in traces:
                if by_id.get(trace.res_id):
                    customers[trace] = by_id[trace.res_id]
        unmatched = self.filtered(lambda t: t not in customers)
        if unmatched:
            customers.update(unmatched._ecrm_match_partners())
        return customers

    def _ecrm_match_partners(self):
        Partner = self.env["res.partner"].sudo()  # sudo: matching reads every customer
        emails = {t.email for t in self if t.trace_type == "mail" and t.email}
        numbers = {t.sms_number for t in self if t.trace_type == "sms" and t.sms_number}
        by_email, by_phone = {}, {}
        if emails:
            for partner in Partner.search([("email_normalized", "in", list(emails))], order="id"):
                by_email.setdefault(partner.email_normalized, partner)
        if numbers:
            for partner in Partner.search([("phone_sanitized", "in", list(numbers))], order="id"):
                by_phone.setdefault(partner.phone_sanitized, partner)
        matches = {}
        for trace in self:
            partner = by_email.get(trace.email) or by_phone.get(trace.sms_number)
            if partner:
                matches[trace] = partner
        return matches

    def _ecrm_update_outcome(self, outcome):
        """Move the logged interactions of these traces forward to ``outcome``."""
        lower = [name for name, rank in OUTCOME_RANK.items() if rank < OUTCOME_RANK[outcome]]
        interactions = (
            self.env["ecrm.interaction"]
            .sudo()  # sudo: tracking updates come from public open/click/bounce handlers
            .search(
                [
                    ("res_model", "=", self._name),
                    ("res_id", "in", self.ids),
                    ("outcome", "in", lower),
                ]
            )
        )
        interactions.write({"outcome": outcome})
