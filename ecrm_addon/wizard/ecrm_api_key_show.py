from odoo import fields, models


class EcrmApiKeyShow(models.AbstractModel):
    """The new key, shown once, with what it may do and how to use it.

    Nothing is stored: the values come from the context, as in Odoo's own key dialog.
    """

    _name = "ecrm.api.key.show"
    _description = "New e-CRM API Key"

    # the field 'id' is necessary for the onchange that returns the defaults
    id = fields.Id()
    key = fields.Char(readonly=True)
    user_name = fields.Char("API User", readonly=True)
    company_names = fields.Char("Companies", readonly=True)
    expiration_date = fields.Datetime("Expires on", readonly=True)
    endpoint = fields.Char("Interactions Endpoint", readonly=True)
    consent_endpoint = fields.Char("Consents Endpoint", readonly=True)
    example = fields.Text(readonly=True)
