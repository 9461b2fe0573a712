from odoo import api, fields, models, tools
from odoo.exceptions import UserError
from odoo.tools import SQL

EVENT_STATES = [
    ("opt_in", "Opted in"),
    ("opt_out", "Opted out"),
    ("unknown", "Withdrawn (unknown)"),
    ("pause", "Paused"),
]
SOURCES = [
    ("user", "Employee"),
    ("preference_centre", "Preference centre"),
    ("double_opt_in", "Double opt-in confirmation"),
    ("unsubscribe", "Unsubscribe link"),
    ("blacklist", "Odoo blacklist"),
    ("api", "API"),
    ("import", "Import"),
]
LEGAL_BASES = [
    ("consent", "Consent"),
    ("contract", "Contract"),
    ("legitimate_interest", "Legitimate interest"),
    ("legal_obligation", "Legal obligation"),
]


class EcrmConsentEvent(models.Model):
    """Append-only history of consent: who changed it, how, when, from where, on what text.

    The current state (``ecrm.consent``) is derived from these events, never edited.
    """

    _name = "ecrm.consent.event"
    _description = "Consent Event"
    _order = "date desc, id desc"
    _rec_name = "partner_id"
    _check_company_auto = True

    partner_id = fields.Many2one(
        "res.partner", string="Customer", required=True, index=True, ondelete="cascade"
    )
    company_id = fields.Many2one(
        "res.company", required=True, index=True, default=lambda self: self.env.company
    )
    channel_id = fields.Many2one("ecrm.channel", required=True, ondelete="restrict")
    purpose_id = fields.Many2one(
        "ecrm.consent.purpose",
        required=True,
        ondelete="restrict",
        default=lambda self: self.env.ref("ecrm_addon.ecrm_consent_purpose_marketing", False),
    )
    state = fields.Selection(EVENT_STATES, required=True)
    pause_until = fields.Datetime(help="For a pause: no contact on this channel until then.")
    date = fields.Datetime(required=True, default=fields.Datetime.now, index=True)
    source = fields.Selection(SOURCES, required=True, default="user")
    user_id = fields.Many2one("res.users", default=lambda self: self.env.user, string="Recorded By")
    ip_address = fields.Char("IP Address")
    address = fields.Char(help="The email address or phone number the consent is about.")
    consent_text_version = fields.Char(
        help="Version of the consent text shown to the customer when they decided."
    )
    legal_basis = fields.Selection(LEGAL_BASES, default="consent")
    note = fields.Text()
    source_system = fields.Char(help="The outside system that sent this event.")
    external_ref = fields.Char(string="External Reference")

    def init(self):
        tools.create_index(
            self.env.cr,
            "ecrm_consent_event_key_idx",
            self._table,
            ["partner_id", "company_id", "channel_id", "purpose_id", "date DESC", "id DESC"],
        )
        self.env.cr.execute(
            SQL(
                """CREATE UNIQUE INDEX IF NOT EXISTS ecrm_consent_event_external_ref_uniq
                     ON ecrm_consent_event (company_id, source_system, external_ref)
                  WHERE external_ref IS NOT NULL"""
            )
        )
        return super().init()

    @api.model_create_multi
    def create(self, vals_list):
        events = super().create(vals_list)
        events._apply()
        return events

    def write(self, vals):
        if vals:
            raise UserError(
                self.env._("Consent events are a record of what happened: they are never edited.")
            )
        return super().write(vals)

    @api.ondelete(at_uninstall=False)
    def _unlink_except_proof(self):
        if not self.env.context.get("ecrm_consent_retention"):
            raise UserError(
                self.env._(
                    "Consent events are kept as proof. An administrator removes old ones with "
                    "the data-retention tool only."
                )
            )

    @api.model
    def _purge_before(self, date):
        """Data retention: delete events older than ``date`` that no longer decide a state.

        Administrators only; the latest event of each customer, company, channel and
        purpose is always kept, so the current state and its proof stay.
        """
        if not self.env.is_admin():
            raise UserError(self.env._("Only administrators run the consent data retention."))
        self.flush_model()
        self.env.cr.execute(
            SQL(
                """
                SELECT e.id FROM ecrm_consent_event e
                 WHERE e.date < %s
                   AND EXISTS (SELECT 1 FROM ecrm_consent_event later
                                WHERE later.partner_id = e.partner_id
                                  AND later.company_id = e.company_id
                                  AND later.channel_id = e.channel_id
                                  AND later.purpose_id = e.purpose_id
                                  AND later.state = e.state
                                  AND (later.date, later.id) > (e.date, e.id))
                """,
                date,
            )
        )
        old = self.browse([row[0] for row in self.env.cr.fetchall()])
        old.with_context(ecrm_consent_retention=True).unlink()
        return len(old)

    def _apply(self):
        """Derive the current consent of every key these events touch, from its history."""
        if not self:
            return
        self.flush_model()
        self.env["ecrm.consent"].flush_model()
        self.env.cr.execute(
            SQL(
                """
                WITH keys AS (
                    SELECT DISTINCT partner_id, company_id, channel_id, purpose_id
                      FROM ecrm_consent_event WHERE id = ANY(%(ids)s)
                ), last_state AS (
                    SELECT DISTINCT ON (e.partner_id, e.company_id, e.channel_id, e.purpose_id)
                           e.partner_id, e.company_id, e.channel_id, e.purpose_id, e.state,
                           e.id, e.date
                      FROM ecrm_consent_event e
                      JOIN keys k USING (partner_id, company_id, channel_id, purpose_id)
                     WHERE e.state <> 'pause'
                  ORDER BY e.partner_id, e.company_id, e.channel_id, e.purpose_id,
                           e.date DESC, e.id DESC
                ), last_pause AS (
                    SELECT DISTINCT ON (e.partner_id, e.company_id, e.channel_id, e.purpose_id)
                           e.partner_id, e.company_id, e.channel_id, e.purpose_id,
                           e.pause_until, e.id, e.date
                      FROM ecrm_consent_event e
                      JOIN keys k USING (partner_id, company_id, channel_id, purpose_id)
                     WHERE e.state = 'pause'
                  ORDER BY e.partner_id, e.company_id, e.channel_id, e.purpose_id,
                           e.date DESC, e.id DESC
                )
                INSERT INTO ecrm_consent (
                    partner_id, company_id, channel_id, purpose_id, state, paused_until,
                    last_event_id, date, create_uid, create_date, write_uid, write_date)
                SELECT k.partner_id, k.company_id, k.channel_id, k.purpose_id,
                       COALESCE(s.state, 'unknown'), p.pause_until,
                       CASE WHEN p.id IS NULL OR (s.date, s.id) > (p.date, p.id)
                            THEN s.id ELSE p.id END,
                       GREATEST(s.date, p.date),
                       %(uid)s, now() at time zone 'UTC', %(uid)s, now() at time zone 'UTC'
                  FROM keys k
             LEFT JOIN last_state s USING (partner_id, company_id, channel_id, purpose_id)
             LEFT JOIN last_pause p USING (partner_id, company_id, channel_id, purpose_id)
                ON CONFLICT (partner_id, company_id, channel_id, purpose_id) DO UPDATE SET
                    state = EXCLUDED.state, paused_until = EXCLUDED.paused_until,
                    last_event_id = EXCLUDED.last_event_id, date = EXCLUDED.date,
                    write_uid = EXCLUDED.write_uid, write_date = EXCLUDED.write_date
                """,
                ids=self.ids,
                uid=self.env.uid,
            )
        )
        self.env["ecrm.consent"].invalidate_model()
        if not self.env.context.get("ecrm_consent_from_blacklist"):
            self._sync_blacklists()

    @api.model
    def _record_blacklist_change(self, channel_code, partner_field, states):
        """Blacklisting an address opts its customers out of marketing on the channel in
        every company; removing the entry withdraws that opt-out. ``states`` maps each
        address to whether it is blacklisted now."""
        if not states:
            return self.browse()
        # sudo: the blacklist is global; its consent events are recorded for every company
        Partner = self.env["res.partner"].sudo().with_context(active_test=False)
        channel = self.env["ecrm.channel"].sudo()._get_by_code(channel_code)
        marketing = self.env.ref("ecrm_addon.ecrm_consent_purpose_marketing", False)
        if not channel or not marketing:
            return self.browse()
        partners = Partner.search([(partner_field, "in", list(states))])
        companies = self.env["res.company"].sudo().search([("active", "=", True)])
        return (
            self.sudo()
            .with_context(ecrm_consent_from_blacklist=True)
            .create(
                [
                    {
                        "partner_id": partner.id,
                        "company_id": company.id,
                        "channel_id": channel.id,
                        "purpose_id": marketing.id,
                        "state": "opt_out" if states[partner[partner_field]] else "unknown",
                        "source": "blacklist",
                        "address": partner[partner_field],
                        "user_id": self.env.uid,
                    }
                    for partner in partners
                    for company in companies
                ]
            )
        )

    def _sync_blacklists(self):
        """Odoo's blacklists follow the marketing consent by email and SMS.

        They are global: the latest decision about an address, in any company, sets its
        entry (opted out: blacklisted; opted in or withdrawn: not).
        """
        marketing = self.env.ref("ecrm_addon.ecrm_consent_purpose_marketing", False)
        events = self.filtered(
            lambda e: e.purpose_id == marketing and e.channel_id.code in ("email", "sms")
        )
        if not events:
            return
        consents = (
            self.env["ecrm.consent"]
            .sudo()
            .search(  # sudo: every company's decision
                [
                    ("partner_id", "in", events.partner_id.ids),
                    ("channel_id", "in", events.channel_id.ids),
                    ("purpose_id", "=", marketing.id),
                ]
            )
        )
        final = {"email": {}, "sms": {}}  # address -> blacklisted
        for consent in consents.sorted(lambda c: (c.date, c.last_event_id.id)):
            code = consent.channel_id.code
            partner = consent.partner_id
            address = partner.email_normalized if code == "email" else partner.phone_sanitized
            if address:
                final[code][address] = consent.state == "opt_out"
        # sudo: blacklists are technical records every consent change must keep in sync
        env = self.sudo().with_context(ecrm_consent_sync=True, active_test=False).env
        for model, field, code in (
            ("mail.blacklist", "email", "email"),
            ("phone.blacklist", "number", "sms"),
        ):
            if final[code]:
                self._sync_blacklist(env[model], field, final[code])

    @api.model
    def _sync_blacklist(self, Blacklist, field, final):
        """Set the blacklist entries of many addresses with three queries."""
        existing = Blacklist.search([(field, "in", list(final))])
        known = {record[field] for record in existing}
        Blacklist.create(
            [{field: address, "active": True} for address, add in final.items()
             if add and address not in known]
        )  # fmt: skip
        existing.filtered(lambda r: final.get(r[field]) and not r.active).write({"active": True})
        existing.filtered(lambda r: final.get(r[field]) is False and r.active).write(
            {"active": False}
        )
