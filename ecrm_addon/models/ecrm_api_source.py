from odoo import api, fields, models

UNKNOWN_CUSTOMER_POLICIES = [
    ("reject", "Reject the event"),
    ("inbox", "Park it in the Unmatched inbox"),
]


class EcrmApiSource(models.Model):
    """An outside system that pushes events to the ingestion API, per company.

    Events name their system in ``source``; a source known here decides what happens to
    events whose customer cannot be matched. Events of sources not listed here follow the
    company's setting. Archiving a source refuses its events.
    """

    _name = "ecrm.api.source"
    _description = "API Source"
    _order = "name, id"

    name = fields.Char(
        required=True,
        help="The name the system sends in the 'source' field of its events, e.g. "
        "'asterisk'. Case-sensitive.",
    )
    company_id = fields.Many2one(
        "res.company", required=True, index=True, default=lambda self: self.env.company
    )
    unknown_customer_policy = fields.Selection(
        UNKNOWN_CUSTOMER_POLICIES,
        string="Unknown Customers",
        required=True,
        default="inbox",
        help="Reject: the event is answered with an error and not stored. Park: the event "
        "waits in e-CRM > Interactions > Unmatched until someone matches it to a customer "
        "or creates one. Ambiguous customers (two contacts share the email) are handled "
        "the same way.",
    )
    active = fields.Boolean(
        default=True, help="Events of an archived source are refused with an error."
    )
    note = fields.Text()
    interaction_count = fields.Integer(compute="_compute_counts")
    unmatched_count = fields.Integer(string="Unmatched", compute="_compute_counts")

    _sql_constraints = [
        (
            "name_company_uniq",
            "unique(name, company_id)",
            "A company has one API source of a given name.",
        ),
    ]

    @api.depends("name", "company_id")
    def _compute_counts(self):
        domain = [
            ("source_system", "in", self.mapped("name")),
            ("company_id", "in", self.company_id.ids),
        ]
        interactions = {
            (source, company.id): count
            for source, company, count in self.env["ecrm.interaction"]._read_group(
                [*domain, ("capture_mode", "=", "api")],
                ["source_system", "company_id"],
                ["__count"],
            )
        }
        pending = {
            (source, company.id): count
            for source, company, count in self.env["ecrm.unmatched.event"]._read_group(
                [*domain, ("state", "=", "pending")],
                ["source_system", "company_id"],
                ["__count"],
            )
        }
        for source in self:
            key = (source.name, source.company_id.id)
            source.interaction_count = interactions.get(key, 0)
            source.unmatched_count = pending.get(key, 0)

    def action_view_interactions(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id("ecrm_addon.ecrm_interaction_action")
        action["domain"] = [
            ("source_system", "=", self.name),
            ("company_id", "=", self.company_id.id),
            ("capture_mode", "=", "api"),
        ]
        action["context"] = {}
        return action

    def action_view_unmatched(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id(
            "ecrm_addon.ecrm_unmatched_event_action"
        )
        action["domain"] = [
            ("source_system", "=", self.name),
            ("company_id", "=", self.company_id.id),
        ]
        return action
