from odoo import api, fields, models


class EcrmBacktestLine(models.Model):
    _name = "ecrm.backtest.line"
    _description = "Scoring Backtest Line"
    _order = "run_id, repeat_purchases"

    run_id = fields.Many2one("ecrm.score.run", required=True, index=True, ondelete="cascade")
    company_id = fields.Many2one(related="run_id.company_id", store=True)
    repeat_purchases = fields.Integer(help="Repeat purchases before the reference date.")
    label = fields.Char("Past Repeat Purchases")
    customers = fields.Integer()
    predicted = fields.Float("Predicted Purchases", digits=(16, 1))
    actual = fields.Float("Actual Purchases", digits=(16, 1))
    error = fields.Float(
        "Error (%)", compute="_compute_error", store=True, digits=(16, 1),
        help="(predicted - actual) / actual",
    )  # fmt: skip

    @api.depends("predicted", "actual")
    def _compute_error(self):
        for line in self:
            line.error = 100 * (line.predicted - line.actual) / line.actual if line.actual else 0
