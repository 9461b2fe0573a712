from odoo import fields, models, tools


class EcrmWebVisitor(models.Model):
    """A customer's browser as a web analytics source knows it.

    One row per company, source, customer and visitor id. The ingestion API upserts the
    rows of a batch's web events before it groups them into visits: two requests that
    extend the visits of the same visitor at the same time conflict on this row, and the
    later one is retried with the earlier one's visits in sight (no visit is split in two).
    """

    _name = "ecrm.web.visitor"
    _description = "Web Visitor"
    _order = "last_event_at desc, id desc"
    _rec_name = "visitor_ref"

    company_id = fields.Many2one("res.company", required=True, readonly=True)
    source_system = fields.Char(required=True, readonly=True)
    partner_id = fields.Many2one(
        "res.partner", string="Customer", required=True, readonly=True, ondelete="cascade"
    )
    visitor_ref = fields.Char(
        string="Visitor",
        readonly=True,
        help="The visitor id of the web analytics source (empty when it sends none).",
    )
    last_event_at = fields.Datetime(string="Last Seen", readonly=True)
    event_ids = fields.One2many("ecrm.interaction.event", "visitor_id", string="Web Events")

    def init(self):
        # The key of the API's upsert: one row per company, source, customer and visitor.
        self.env.cr.execute(
            tools.SQL(
                """
                CREATE UNIQUE INDEX IF NOT EXISTS ecrm_web_visitor_key_uniq
                    ON ecrm_web_visitor (company_id, source_system, partner_id, visitor_ref)
                """
            )
        )
        return super().init()
