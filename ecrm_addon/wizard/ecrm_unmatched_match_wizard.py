from odoo import api, fields, models
from odoo.exceptions import UserError


class EcrmUnmatchedMatchWizard(models.TransientModel):
    _name = "ecrm.unmatched.match.wizard"
    _description = "Match Unmatched Events to a Customer"

    unmatched_ids = fields.Many2many("ecrm.unmatched.event", string="Events", required=True)
    company_id = fields.Many2one("res.company", compute="_compute_company_id")
    partner_id = fields.Many2one(
        "res.partner",
        string="Customer",
        required=True,
        domain="[('company_id', 'in', [False, company_id])]",
    )
    include_same_identifier = fields.Boolean(
        string="Same Identifier Too",
        default=True,
        help="Also match the other pending events that carry the same email, phone or reference.",
    )

    @api.depends("unmatched_ids")
    def _compute_company_id(self):
        for wizard in self:
            wizard.company_id = wizard.unmatched_ids.company_id[:1]

    def action_match(self):
        self.ensure_one()
        if len(self.unmatched_ids.company_id) > 1:
            raise UserError(self.env._("Match the events of one company at a time."))
        events = self.unmatched_ids
        if self.include_same_identifier:
            events |= events.search(events._get_same_identifier_domain())
        events._resolve(self.partner_id)
        return {"type": "ir.actions.act_window_close"}
