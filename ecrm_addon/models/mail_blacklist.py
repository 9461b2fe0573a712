from odoo import api, models


class MailBlacklist(models.Model):
    _inherit = "mail.blacklist"

    @api.model_create_multi
    def create(self, vals_list):
        records = super().create(vals_list)
        # always: the consent sync writes the blacklist in SQL, never through here, and a
        # context key would let an RPC caller blacklist without a consent record
        records._ecrm_record_consent()
        return records

    def write(self, vals):
        result = super().write(vals)
        if "active" in vals:
            self._ecrm_record_consent()
        return result

    def _ecrm_record_consent(self):
        self.env["ecrm.consent.event"]._record_blacklist_change(
            "email", "email_normalized", {record.email: record.active for record in self}
        )
