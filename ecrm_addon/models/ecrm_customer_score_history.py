from odoo import fields, models

from .ecrm_customer_score import SCORE_SELECTION


class EcrmCustomerScoreHistory(models.Model):
    """Monthly snapshot of each customer's scores, written in bulk by the scoring runs."""

    _name = "ecrm.customer.score.history"
    _description = "Customer Score History"
    _order = "period desc, id"
    _rec_name = "partner_id"
    # No create/write user and date (``run_id`` tells which run wrote a snapshot): a
    # snapshot inserts every customer of the company, and each reference is checked per
    # row; the two user references were a fifth of the time.
    _log_access = False

    # Found through the unique index (company, period, customer): whether a period has
    # its snapshot, a period's customers (migrations between segments), a customer's
    # snapshot in a period.
    period = fields.Date(required=True, help="First day of the month.")
    partner_id = fields.Many2one(
        "res.partner", string="Customer", required=True, index=True, ondelete="cascade"
    )
    company_id = fields.Many2one("res.company", required=True, ondelete="cascade")
    currency_id = fields.Many2one(related="company_id.currency_id")
    run_id = fields.Many2one("ecrm.score.run", ondelete="set null")
    r_score = fields.Selection(SCORE_SELECTION, "R")
    f_score = fields.Selection(SCORE_SELECTION, "F")
    m_score = fields.Selection(SCORE_SELECTION, "M")
    segment_id = fields.Many2one("ecrm.rfm.segment", string="RFM Segment")
    tier_id = fields.Many2one("ecrm.loyalty.tier", string="Loyalty Tier")
    loyalty_score = fields.Float()
    churn_risk = fields.Float(digits=(16, 4))
    clv = fields.Monetary("Lifetime Value")
    monetary_total = fields.Monetary("Monetary Value")

    _sql_constraints = [
        (
            "partner_company_period_uniq",
            "unique(company_id, period, partner_id)",
            "One snapshot per customer, company and period.",
        ),
    ]
