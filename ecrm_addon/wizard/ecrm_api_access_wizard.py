import json
import re
from datetime import timedelta

from odoo import Command, api, fields, models
from odoo.exceptions import UserError

EXAMPLE = """curl -X POST {endpoint} \\
  -H "Authorization: Bearer {key}" \\
  -H "Content-Type: application/json" \\
  -d '{body}'"""


class EcrmApiAccessWizard(models.TransientModel):
    """Give an outside system access to the ingestion API.

    Creates a technical user that is in the API ingestion group and nothing else (a
    portal-type user: its key cannot read customers or orders through JSON-RPC), or picks
    an existing one, and makes it an API key that expires. The key is shown once.
    """

    _name = "ecrm.api.access.wizard"
    _description = "Create API Access"

    user_id = fields.Many2one(
        "res.users",
        string="Existing API User",
        domain=lambda self: [
            ("groups_id", "in", self.env.ref("ecrm_addon.group_ecrm_ingest").ids),
            ("share", "=", True),
        ],
        help="Leave empty to create a new technical user; pick one to give it a new key "
        "(e.g. before its current key expires).",
    )
    name = fields.Char(string="System Name", help="e.g. Telephone exchange")
    login = fields.Char(compute="_compute_login", store=True, readonly=False)
    company_ids = fields.Many2many(
        "res.company",
        string="Companies",
        default=lambda self: self.env.company,
        domain=lambda self: [("id", "in", self.env.user.company_ids.ids)],
        help="The companies the system may push interactions into.",
    )
    company_id = fields.Many2one(
        "res.company",
        string="Default Company",
        default=lambda self: self.env.company,
        domain="[('id', 'in', company_ids)]",
        help="The company of events that name none.",
    )
    key_name = fields.Char(string="Key Description", required=True, default="e-CRM API")
    expiration_date = fields.Datetime(
        required=True,
        default=lambda self: fields.Datetime.now() + timedelta(days=90),
        help="The key stops working at this date; make a new one before.",
    )

    @api.depends("name")
    def _compute_login(self):
        for wizard in self:
            slug = re.sub(r"[^a-z0-9]+", "-", (wizard.name or "").lower()).strip("-")
            wizard.login = slug and f"ecrm-api-{slug}"

    def _create_user(self):
        if not (self.name and self.login):
            raise UserError(self.env._("Give the system a name."))
        if not self.company_ids or self.company_id not in self.company_ids:
            raise UserError(self.env._("Choose the companies, the default company among them."))
        if self.company_ids - self.env.user.company_ids:
            raise UserError(self.env._("You can only give access to your own companies."))
        groups = self.env.ref("base.group_portal") | self.env.ref("ecrm_addon.group_ecrm_ingest")
        return (
            self.env["res.users"]
            .sudo()  # sudo: e-CRM managers create users limited to the ingestion group
            .with_context(no_reset_password=True)
            .create(
                {
                    "name": self.name,
                    "login": self.login,
                    "company_id": self.company_id.id,
                    "company_ids": [Command.set(self.company_ids.ids)],
                    "groups_id": [Command.set(groups.ids)],
                }
            )
        )

    @api.model
    def _check_api_user_companies(self, users):
        """An administrator manages only the API users of their own companies: a key of a
        user who may also push into another company would write into that company."""
        foreign = users.sudo().company_ids - self.env.user.company_ids
        if foreign:
            raise UserError(
                self.env._(
                    "%(users)s may push into %(companies)s, which you do not manage: ask an "
                    "administrator of all its companies.",
                    users=", ".join(users.mapped("name")),
                    companies=", ".join(foreign.mapped("name")),
                )
            )

    def action_create(self):
        self.ensure_one()
        if self.expiration_date <= fields.Datetime.now():
            raise UserError(self.env._("The expiration date must be in the future."))
        if self.user_id:
            self._check_api_user_companies(self.user_id)
        user = self.user_id or self._create_user()
        if not user.has_group("ecrm_addon.group_ecrm_ingest") or not user.share:
            raise UserError(self.env._("Keys are only made here for API ingestion users."))
        key = (
            self.env["res.users.apikeys"]
            .with_user(user)
            .sudo()  # sudo: the manager makes the key of a technical user, with an expiry
            ._generate("rpc", self.key_name, self.expiration_date)
        )
        return {
            "type": "ir.actions.act_window",
            "res_model": "ecrm.api.key.show",
            "name": self.env._("API Key Ready"),
            "views": [(self.env.ref("ecrm_addon.ecrm_api_key_show_view_form").id, "form")],
            "target": "new",
            "context": self._get_key_show_context(user, key),
        }

    def _get_key_show_context(self, user, key):
        base_url = self.get_base_url()
        endpoint = f"{base_url}/ecrm/api/v1/interactions"
        event = {
            "external_id": "call-8812",
            "source": "telephony",
            "channel": "phone",
            "direction": "inbound",
            "occurred_at": "2026-05-01T14:30:00+02:00",
            "email": "customer@example.com",
            "subject": "Delivery question",
        }
        example = EXAMPLE.format(
            endpoint=endpoint, key=key, body=json.dumps({"events": [event]}, indent=2)
        )
        return {
            "default_key": key,
            "default_user_name": user.name,
            "default_company_names": ", ".join(user.sudo().company_ids.mapped("name")),
            "default_expiration_date": fields.Datetime.to_string(self.expiration_date),
            "default_endpoint": endpoint,
            "default_consent_endpoint": f"{base_url}/ecrm/api/v1/consents",
            "default_example": example,
        }
