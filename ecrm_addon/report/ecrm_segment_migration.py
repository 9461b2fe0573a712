from odoo import fields, models
from odoo.tools import SQL


class EcrmSegmentMigration(models.Model):
    """Each customer's segment in a monthly snapshot next to the previous month's."""

    _name = "ecrm.segment.migration"
    _description = "Segment Migration"
    _auto = False
    _order = "period desc, id"
    _rec_name = "partner_id"

    period = fields.Date(readonly=True)
    partner_id = fields.Many2one("res.partner", string="Customer", readonly=True)
    company_id = fields.Many2one("res.company", readonly=True)
    from_segment_id = fields.Many2one("ecrm.rfm.segment", string="From Segment", readonly=True)
    to_segment_id = fields.Many2one("ecrm.rfm.segment", string="To Segment", readonly=True)
    moved = fields.Boolean(readonly=True)

    @property
    def _table_query(self):
        return SQL(
            """
            SELECT cur.id, cur.period, cur.partner_id, cur.company_id,
                   prev.segment_id AS from_segment_id, cur.segment_id AS to_segment_id,
                   prev.segment_id IS DISTINCT FROM cur.segment_id AS moved
              FROM ecrm_customer_score_history cur
              JOIN ecrm_customer_score_history prev
                ON prev.partner_id = cur.partner_id
               AND prev.company_id = cur.company_id
               AND prev.period = (cur.period - interval '1 month')::date
            """
        )
