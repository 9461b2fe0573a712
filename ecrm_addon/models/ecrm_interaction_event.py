from odoo import fields, models, tools


class EcrmInteractionEvent(models.Model):
    """One page or product view pushed by a web analytics source.

    Web events are numerous: the API groups those of a visitor into one "web visit"
    interaction and keeps each event here, with its id in the source so that a retried
    push is recognized, and its time so that later events can join the visit.
    """

    _name = "ecrm.interaction.event"
    _description = "Web Event"
    _order = "occurred_at, id"
    _rec_name = "external_ref"

    interaction_id = fields.Many2one(
        "ecrm.interaction",
        string="Web Visit",
        required=True,
        readonly=True,
        index=True,
        ondelete="cascade",
    )
    visitor_id = fields.Many2one(
        "ecrm.web.visitor", required=True, readonly=True, ondelete="cascade"
    )
    company_id = fields.Many2one("res.company", required=True, readonly=True)
    source_system = fields.Char(required=True, readonly=True)
    external_ref = fields.Char(string="External Reference", required=True, readonly=True)
    occurred_at = fields.Datetime(required=True, readonly=True)
    url = fields.Char(string="URL", readonly=True)
    page = fields.Char(readonly=True)
    product = fields.Char(readonly=True)

    def init(self):
        # A retried push never makes a duplicate (same key as ecrm_interaction.external_ref).
        self.env.cr.execute(
            tools.SQL(
                """
                CREATE UNIQUE INDEX IF NOT EXISTS ecrm_interaction_event_external_ref_uniq
                    ON ecrm_interaction_event (company_id, source_system, external_ref)
                """
            )
        )
        # The events of a visitor around a time: where a new event's visit is looked up.
        tools.create_index(
            self.env.cr,
            "ecrm_interaction_event_visitor_date_idx",
            self._table,
            ["visitor_id", "occurred_at"],
        )
        return super().init()
