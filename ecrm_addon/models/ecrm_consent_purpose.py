from odoo import fields, models


class EcrmConsentPurpose(models.Model):
    _name = "ecrm.consent.purpose"
    _description = "Consent Purpose"
    _order = "sequence, id"

    name = fields.Char(required=True, translate=True)
    code = fields.Char(required=True)
    sequence = fields.Integer(default=10)
    active = fields.Boolean(default=True)
    description = fields.Text(translate=True, help="Shown to customers in the preference centre.")

    _sql_constraints = [("code_uniq", "unique(code)", "The code of a purpose must be unique.")]
