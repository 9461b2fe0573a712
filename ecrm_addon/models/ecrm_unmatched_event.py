import json

from odoo import Command, api, fields, models, tools
from odoo.exceptions import AccessError, UserError

from ..tools.ingest_validation import IDENTIFIERS

IDENTIFIER_KINDS = [
    ("email", "Email"),
    ("phone", "Phone"),
    ("customer_ref", "Customer Reference"),
]
# identifier kind: (res.partner field searched, res.partner field set on a new customer)
IDENTIFIER_FIELDS = {
    "email": ("email_normalized", "email"),
    "phone": ("phone_sanitized", "phone"),
    "customer_ref": ("ref", "ref"),
}
# What users may change on a parked event (resolving and discarding it).
USER_WRITABLE_FIELDS = {"state", "partner_id", "interaction_id"}


class EcrmUnmatchedEvent(models.Model):
    """An event pushed through the API whose customer could not be matched.

    Sources whose policy is to park unknown customers leave their events here; a user
    matches them to a customer, creates the customer, or discards them. Resolving makes
    the interaction exactly as the API would have (web events join their visit).
    """

    _name = "ecrm.unmatched.event"
    _description = "Unmatched API Event"
    _order = "occurred_at desc, id desc"
    _rec_name = "external_ref"
    _check_company_auto = True

    company_id = fields.Many2one("res.company", required=True, readonly=True, index=True)
    source_system = fields.Char(string="Source", required=True, readonly=True)
    external_ref = fields.Char(string="External Reference", required=True, readonly=True)
    channel_id = fields.Many2one("ecrm.channel", readonly=True, ondelete="set null")
    direction = fields.Selection([("inbound", "Inbound"), ("outbound", "Outbound")], readonly=True)
    occurred_at = fields.Datetime(string="Date", readonly=True)
    identifier_kind = fields.Selection(IDENTIFIER_KINDS, string="Identified By", readonly=True)
    identifier = fields.Char(readonly=True, help="The email or phone (normalized) or reference.")
    customer_name = fields.Char(readonly=True, help="The customer's name, when the source sent it.")
    reason = fields.Selection(
        [("unknown", "Unknown customer"), ("ambiguous", "Several customers")], readonly=True
    )
    payload = fields.Text(string="Event", readonly=True, help="The event as the source sent it.")
    state = fields.Selection(
        [("pending", "Pending"), ("resolved", "Resolved"), ("discarded", "Discarded")],
        required=True,
        default="pending",
        readonly=True,
        index=True,
    )
    partner_id = fields.Many2one(
        "res.partner", string="Customer", readonly=True, check_company=True, index="btree_not_null"
    )
    interaction_id = fields.Many2one("ecrm.interaction", readonly=True, ondelete="set null")
    candidate_ids = fields.Many2many(
        "res.partner",
        string="Candidates",
        compute="_compute_candidate_ids",
        help="The customers of the company that carry this identifier.",
    )

    def init(self):
        # Parked events are idempotent too: one row per company, source and external id.
        self.env.cr.execute(
            tools.SQL(
                """
                CREATE UNIQUE INDEX IF NOT EXISTS ecrm_unmatched_event_external_ref_uniq
                    ON ecrm_unmatched_event (company_id, source_system, external_ref)
                """
            )
        )
        return super().init()

    @api.depends("identifier_kind", "identifier", "company_id")
    def _compute_candidate_ids(self):
        Partner = self.env["res.partner"]
        for event in self:
            candidates = Partner
            if event.identifier_kind and event.identifier:
                field = IDENTIFIER_FIELDS[event.identifier_kind][0]
                candidates = Partner.search(
                    [
                        (field, "=", event.identifier),
                        ("company_id", "in", [False, event.company_id.id]),
                    ],
                    limit=20,
                )
            event.candidate_ids = candidates

    def _get_same_identifier_domain(self):
        """Pending events of the same company carrying one of these identifiers."""
        return [
            ("state", "=", "pending"),
            ("company_id", "in", self.company_id.ids),
            ("identifier", "in", [identifier for identifier in self.mapped("identifier")]),
        ]

    def action_open_match_wizard(self):
        return {
            "type": "ir.actions.act_window",
            "name": self.env._("Match to a Customer"),
            "res_model": "ecrm.unmatched.match.wizard",
            "view_mode": "form",
            "target": "new",
            "context": {"default_unmatched_ids": [Command.set(self.ids)]},
        }

    def action_create_customer(self):
        """Create one customer per identifier (in the event's company) and resolve."""
        pending = self.filtered(lambda event: event.state == "pending")
        if not pending:
            raise UserError(self.env._("Select pending events."))
        groups = pending.grouped(
            lambda event: (event.company_id, event.identifier_kind, event.identifier)
        )
        for (company, kind, identifier), events in groups.items():
            name = next((name for name in events.mapped("customer_name") if name), identifier)
            partner = self.env["res.partner"].create(
                {
                    "name": name,
                    "company_id": company.id,
                    "customer_rank": 1,
                    IDENTIFIER_FIELDS[kind][1]: identifier,
                }
            )
            events._resolve(partner)
        return True

    def write(self, vals):
        # What the source sent is the record of the event: users match, create the
        # customer or discard, they never rewrite it (an edited payload resolved into a
        # forged API interaction).
        if not self.env.su and set(vals) - USER_WRITABLE_FIELDS:
            raise AccessError(
                self.env._(
                    "An event received from an outside system cannot be edited: match it to "
                    "a customer or discard it."
                )
            )
        return super().write(vals)

    def action_discard(self):
        self.filtered(lambda event: event.state == "pending").write({"state": "discarded"})
        return True

    def action_reset(self):
        self.filtered(lambda event: event.state == "discarded").write({"state": "pending"})
        return True

    def _resolve(self, partner):
        """Make the interactions of these pending events for ``partner``.

        Each event goes through the API's own validation, matching and web visits with
        the customer given by id; any error leaves every event pending.
        """
        pending = self.filtered(lambda event: event.state == "pending")
        if not pending:
            raise UserError(self.env._("These events are already resolved or discarded."))
        pending.check_access("write")
        Ingest = self.env["ecrm.api.ingest"].sudo()  # sudo: writes like the API, see _ingest
        errors = []
        for company, events in pending.grouped("company_id").items():
            raws, valid = [], self.browse()
            for event in events:
                try:
                    raw = json.loads(event.payload or "")
                except ValueError:
                    raw = None
                if not isinstance(raw, dict):
                    errors.append(
                        self.env._("%s: the event is not a JSON object", event.external_ref)
                    )
                    continue
                for name in IDENTIFIERS:
                    raw.pop(name, None)
                raws.append(dict(raw, partner_id=partner.id, company_id=company.id))
                valid |= event
            results = Ingest._ingest(raws, company, company, resolving=True) if raws else []
            for event, result in zip(valid, results, strict=True):
                if result["status"] == "error":
                    errors.append(f"{event.external_ref}: {result['message']}")
                else:
                    event.interaction_id = result.get("id")
        if errors:
            raise UserError(
                self.env._(
                    "These events cannot be logged for %(customer)s:\n%(errors)s",
                    customer=partner.display_name,
                    errors="\n".join(errors),
                )
            )
        pending.write({"state": "resolved", "partner_id": partner.id})
        return True
