from odoo import api, fields, models
from odoo.exceptions import ValidationError


class EcrmLoyaltyTier(models.Model):
    _name = "ecrm.loyalty.tier"
    _description = "Loyalty Tier"
    _order = "company_id, min_score, id"

    name = fields.Char(required=True, translate=True)
    min_score = fields.Float(
        "Minimum Loyalty Score",
        required=True,
        help="Customers whose loyalty score (0-100) reaches this value get this tier, unless "
        "they reach a higher one.",
    )
    color = fields.Integer()
    company_id = fields.Many2one(
        "res.company",
        help="Leave empty for the default tiers; a company with tiers of its own uses only those.",
    )
    active = fields.Boolean(default=True)

    @api.constrains("min_score")
    def _check_min_score(self):
        if any(not 0 <= tier.min_score <= 100 for tier in self):
            raise ValidationError(self.env._("The minimum loyalty score is between 0 and 100."))

    @api.model
    def _get_company_tiers(self, company):
        """(ids, minimum scores) of the tiers that apply to a company, lowest first."""
        tiers = self.search_fetch(
            [("company_id", "in", [company.id, False])],
            ["company_id", "min_score"],
            order="min_score, id",
        )
        tiers = tiers.filtered("company_id") or tiers
        return tiers.ids, tiers.mapped("min_score")
