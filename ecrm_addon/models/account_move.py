from odoo import models


class AccountMove(models.Model):
    _inherit = "account.move"

    def _post(self, soft=True):
        posted = super()._post(soft=soft)
        posted._ecrm_request_rescore()
        return posted

    def button_draft(self):
        # Posted credit notes count for the customer's monetary value: set back to draft
        # (or cancelled from there), they stop counting.
        posted = self.filtered(lambda move: move.state == "posted")
        result = super().button_draft()
        posted._ecrm_request_rescore()
        return result

    def _ecrm_request_rescore(self):
        """Have the next incremental scoring run rescore the customers of these moves'
        credit notes: posting one, or setting it back to draft, changes their monetary
        value. (Runs used to look for credit notes written since the last run, which read
        every credit note of the company each time: there is no index on write_date.)"""
        refunds = self.filtered(
            lambda move: move.move_type == "out_refund" and move.commercial_partner_id
        )
        # (in SQL: recorded whatever the user's rights on scores)
        self.env["ecrm.customer.score"]._request_rescore(
            {(move.commercial_partner_id.id, move.company_id.id) for move in refunds}
        )
