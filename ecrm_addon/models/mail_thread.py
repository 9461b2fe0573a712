from odoo import models

# Chatter of these documents is captured in the interaction log.
CAPTURED_THREAD_MODELS = ("res.partner", "sale.order", "crm.lead")


class MailThread(models.AbstractModel):
    _inherit = "mail.thread"

    def _message_create(self, values_list):
        messages = super()._message_create(values_list)
        if self._name in CAPTURED_THREAD_MODELS and not self.env.context.get("ecrm_no_capture"):
            self.env["ecrm.interaction"]._capture_later(
                messages, "_ecrm_capture_messages", model=self.browse()
            )
        return messages

    def _ecrm_get_customer(self):
        """The customer a document of a captured model is about (empty if none)."""
        self.ensure_one()
        if self._name == "res.partner":
            return self
        return self.partner_id if "partner_id" in self._fields else self.env["res.partner"]

    def _ecrm_capture_messages(self, messages):
        """Log emails and SMS exchanged with customers, one batch for all messages (all
        those posted in the transaction: see ``ecrm.interaction._capture_later``).

        Captured: incoming emails from a customer (inbound), messages and SMS sent to
        customers (outbound), portal messages written by customers (inbound, web).
        Never captured: internal notes, system notifications, mass mailings (logged from
        their traces), messages between employees.
        """
        messages = messages.filtered(
            lambda m: m.message_type == "sms"  # SMS are posted with the note subtype
            or (
                m.message_type in ("email", "comment")
                and not m.is_internal
                and m.subtype_id
                and not m.subtype_id.internal
            )
        )
        if not messages:
            return
        # sudo: internal users may be archived or outside the current company
        users = (
            self.env["res.users"]
            .sudo()
            .with_context(active_test=False)
            .search([("partner_id", "in", (messages.author_id | messages.partner_ids).ids)])
        )
        employees = users.filtered(lambda user: not user.share).partner_id
        channel_codes = ("email", "sms", "web")
        Channel = self.env["ecrm.channel"].sudo()  # sudo: channels are configuration
        channels = {code: Channel._get_by_code(code) for code in channel_codes}
        records = {
            record.id: record for record in self.browse(set(messages.mapped("res_id"))).exists()
        }
        vals_list = []
        for message in messages:
            record = records.get(message.res_id)
            if not record:
                continue
            company = self._ecrm_message_company(record)
            if not company.ecrm_capture_email:
                continue
            for partner, direction, code in self._ecrm_message_customers(message, employees):
                if not channels[code]:
                    continue
                vals_list.append(
                    self._ecrm_prepare_message_vals(
                        message, record, partner, direction, channels[code], company, users
                    )
                )
        self.env["ecrm.interaction"]._capture(vals_list, new_sources=True)

    def _ecrm_message_company(self, record):
        if "company_id" in record._fields and record.company_id:
            return record.company_id
        return self.env.company

    def _ecrm_message_customers(self, message, employees):
        """(customer, direction, channel code) of each customer a message was exchanged with."""
        author = message.author_id
        if message.message_type == "email":
            return [(author, "inbound", "email")] if author and author not in employees else []
        if author and author not in employees:
            return [(author, "inbound", "web")]  # written by the customer in the portal
        code = "sms" if message.message_type == "sms" else "email"
        return [(partner, "outbound", code) for partner in message.partner_ids - employees]

    def _ecrm_prepare_message_vals(
        self, message, record, partner, direction, channel, company, users
    ):
        author_user = users.filtered(
            lambda user: user.partner_id == message.author_id and not user.share
        )[:1]
        salesperson = record.user_id if "user_id" in record._fields else record.env["res.users"]
        team = record.team_id if "team_id" in record._fields else record.env["crm.team"]
        if team.company_id and team.company_id != company:
            team = team.browse()
        return {
            "partner_id": partner.id,
            "channel_id": channel.id,
            "direction": direction,
            "date": message.date,
            "subject": message.subject or record.display_name,
            "summary": message.body,
            "user_id": (author_user or salesperson).id,
            "team_id": team.id,
            "company_id": company.id,
            "sale_order_id": record.id if record._name == "sale.order" else False,
            "res_model": "mail.message",
            "res_id": message.id,
        }
