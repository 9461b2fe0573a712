from odoo import api, fields, models
from odoo.exceptions import UserError
from odoo.tools import SQL


class EcrmApiKey(models.Model):
    """The API keys of the e-CRM API users an administrator may manage: read-only rows
    of ``res.users.apikeys`` (whose rules show a key to its owner and to system
    administrators only), with the expiry and a Revoke button.

    Only the keys of API users whose companies are all among the current user's
    companies are listed, and only those can be revoked.
    """

    _name = "ecrm.api.key"
    _description = "e-CRM API Key"
    _auto = False
    _order = "expiration_date, id"

    user_id = fields.Many2one("res.users", string="API User", readonly=True)
    name = fields.Char("Description", readonly=True)
    create_date = fields.Datetime("Created on", readonly=True)
    expiration_date = fields.Datetime("Expires on", readonly=True)
    expired = fields.Boolean(compute="_compute_expired")
    expires_soon = fields.Boolean(compute="_compute_expired")

    @property
    def _table_query(self):
        ingest = self.env.ref("ecrm_addon.group_ecrm_ingest")
        return SQL(
            """
            SELECT k.id, k.user_id, k.name, k.create_date, k.expiration_date
              FROM res_users_apikeys k
              JOIN res_groups_users_rel g ON g.uid = k.user_id AND g.gid = %(ingest)s
             WHERE NOT EXISTS (
                   SELECT FROM res_company_users_rel c
                    WHERE c.user_id = k.user_id AND c.cid != ALL(%(companies)s))
            """,
            ingest=ingest.id,
            companies=self.env.user.company_ids.ids,
        )

    @api.depends("expiration_date")
    def _compute_expired(self):
        now = fields.Datetime.now()
        soon = fields.Datetime.add(now, days=14)
        for key in self:
            key.expired = bool(key.expiration_date and key.expiration_date < now)
            key.expires_soon = bool(
                not key.expired and key.expiration_date and key.expiration_date < soon
            )

    def action_revoke(self):
        """Delete the keys: the outside system's next push is refused."""
        self.env["ecrm.api.access.wizard"]._check_api_user_companies(self.user_id)
        if not self.env.user.has_group("ecrm_addon.group_ecrm_manager"):
            raise UserError(self.env._("Only e-CRM administrators revoke API keys."))
        # sudo: base lets only a key's owner or a system administrator delete it; e-CRM
        # administrators revoke the keys of the API users of their own companies (checked above)
        self.env["res.users.apikeys"].sudo().browse(self.ids)._remove()
        return {"type": "ir.actions.client", "tag": "soft_reload"}
