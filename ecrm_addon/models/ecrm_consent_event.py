from datetime import timedelta

from odoo import api, fields, models, tools
from odoo.exceptions import UserError, ValidationError
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
# Context key of the trusted paths (API, customer pages, blacklists); it counts only in a
# sudo environment, which no RPC caller can get (see _create_trusted).
TRUSTED = "ecrm_consent_trusted"
# A date typed in a form a little ahead of the server's clock is recorded as now.
CLOCK_MARGIN = timedelta(minutes=1)
# Blacklists kept in sync with the marketing consent: channel code, partner column,
# blacklist model and its unique column.
BLACKLISTS = (
    ("email", "email_normalized", "mail.blacklist", "email"),
    ("sms", "phone_sanitized", "phone.blacklist", "number"),
)
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
        "res.partner",
        string="Customer",
        required=True,
        index=True,
        ondelete="cascade",
        check_company=True,
    )
    company_id = fields.Many2one(
        "res.company", required=True, index=True, default=lambda self: self.env.company
    )
    channel_id = fields.Many2one(
        "ecrm.channel", required=True, ondelete="restrict", check_company=True
    )
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
        """Users record consent as themselves, now or in the past, with source "user".

        The proof fields (source, recorder, IP address, outside key, a date to come) are
        set by the trusted paths only: ``_create_trusted`` and ``_insert_keyed``.
        """
        if not self._is_trusted():
            vals_list = [self._prepare_user_vals(vals) for vals in vals_list]
        events = super().create(vals_list)
        events._apply()
        return events

    def _is_trusted(self):
        # The context alone comes from the caller over RPC; sudo never does.
        return self.env.su and bool(self.env.context.get(TRUSTED))

    def _prepare_user_vals(self, vals):
        now = fields.Datetime.now()
        date = fields.Datetime.to_datetime(vals.get("date")) or now
        if date > now + CLOCK_MARGIN:
            raise ValidationError(
                self.env._(
                    "A consent is recorded when the customer gave or withdrew it: the date "
                    "%(date)s is in the future.",
                    date=date,
                )
            )
        return dict(
            vals,
            date=min(date, now),
            source="user",
            user_id=self.env.uid,
            ip_address=False,
            source_system=False,
            external_ref=False,
        )

    @api.model
    def _create_trusted(self, vals_list):
        """Record events from a trusted path, proof fields as given: the customer pages
        (signed links), the blacklist sync. Never call it with a caller's values."""
        # sudo: the trusted flag counts only under sudo; the callers check their input
        return self.sudo().with_context(**{TRUSTED: True}).create(vals_list)

    @api.model
    def _insert_keyed(self, vals_list):
        """Record trusted events that carry an outside key (company, source system,
        external reference), conflict-safe: one ``INSERT ... ON CONFLICT DO NOTHING``.

        An event already stored is skipped. One stored at the same moment by a concurrent
        transaction makes PostgreSQL raise a serialization failure at Odoo's REPEATABLE
        READ, which the request retry absorbs (the retry then finds the event stored):
        never a unique violation that would drop the caller's whole batch.

        :return: {(company_id, source_system, external_ref): new event id}
        """
        if not vals_list:
            return {}
        vals_list = sorted(
            vals_list,
            key=lambda v: (v["company_id"], v["source_system"], v["external_ref"]),
        )

        def column(name):
            return [vals.get(name) or None for vals in vals_list]

        now = self.env.cr.now()
        rows = self.env["ecrm.api.ingest"]._ingest_write(
            SQL(
                """
                INSERT INTO ecrm_consent_event (
                    partner_id, company_id, channel_id, purpose_id, state, pause_until, date,
                    source, user_id, ip_address, address, consent_text_version,
                    legal_basis, note, source_system, external_ref,
                    create_uid, create_date, write_uid, write_date)
                SELECT k.partner_id, k.company_id, k.channel_id, k.purpose_id, k.state,
                       k.pause_until, k.date, k.source, k.user_id, k.ip_address, k.address,
                       k.consent_text_version, k.legal_basis, k.note, k.source_system,
                       k.external_ref, %(uid)s, %(now)s, %(uid)s, %(now)s
                  FROM unnest(%(partners)s::int[], %(companies)s::int[], %(channels)s::int[],
                              %(purposes)s::int[], %(states)s::varchar[],
                              %(pauses)s::timestamp[], %(dates)s::timestamp[],
                              %(sources)s::varchar[], %(users)s::int[], %(ips)s::varchar[],
                              %(addresses)s::varchar[], %(versions)s::varchar[],
                              %(bases)s::varchar[], %(notes)s::text[],
                              %(systems)s::varchar[], %(refs)s::varchar[])
                    AS k(partner_id, company_id, channel_id, purpose_id, state, pause_until,
                         date, source, user_id, ip_address, address, consent_text_version,
                         legal_basis, note, source_system, external_ref)
                ON CONFLICT (company_id, source_system, external_ref)
                   WHERE external_ref IS NOT NULL DO NOTHING
                RETURNING id, company_id, source_system, external_ref
                """,
                partners=column("partner_id"),
                companies=column("company_id"),
                channels=column("channel_id"),
                purposes=column("purpose_id"),
                states=column("state"),
                pauses=column("pause_until"),
                dates=[vals.get("date") or fields.Datetime.now() for vals in vals_list],
                sources=column("source"),
                users=column("user_id"),
                ips=column("ip_address"),
                addresses=column("address"),
                versions=column("consent_text_version"),
                bases=[vals.get("legal_basis") or "consent" for vals in vals_list],
                notes=column("note"),
                systems=column("source_system"),
                refs=column("external_ref"),
                uid=self.env.uid,
                now=now,
            )
        )
        # sudo: recorded from a trusted path; deriving the state reads every company
        self.sudo().browse([row[0] for row in rows])._apply()
        return {(company, system, ref): event_id for event_id, company, system, ref in rows}

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
        # A concurrent request deriving the same consent makes this fail to serialize:
        # expected, Odoo retries the request, so the query is not logged as an error.
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
            ),
            log_exceptions=False,
        )
        self.env["ecrm.consent"].invalidate_model()
        if not (self._is_trusted() and self.env.context.get("ecrm_consent_from_blacklist")):
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
        return self.with_context(ecrm_consent_from_blacklist=True)._create_trusted(
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
                # a customer of one company has consent in that company only
                for company in (partner.company_id or companies)
            ]
        )

    def _sync_blacklists(self):
        """Odoo's blacklists follow the marketing consent by email and SMS.

        They are global: an address is blacklisted while the current marketing consent of
        any customer with that address, in any company, is an opt-out. An opt-in in one
        company never lifts another company's opt-out.
        """
        marketing = self.env.ref("ecrm_addon.ecrm_consent_purpose_marketing", False)
        events = self.filtered(
            lambda e: e.purpose_id == marketing and e.channel_id.code in ("email", "sms")
        )
        if not events:
            return
        # sudo: blacklists are technical records every consent change must keep in sync,
        # decided from every company's consent
        env = self.sudo().env
        for code, column, model, field in BLACKLISTS:
            partners = events.filtered(lambda e, code=code: e.channel_id.code == code).partner_id
            addresses = sorted({address for address in partners.sudo().mapped(column) if address})
            if addresses:
                decided = self._blacklist_decisions(code, column, addresses, marketing)
                self._sync_blacklist(env[model], field, decided)
        self.env.invalidate_all()  # the blacklists and every is_blacklisted computed from them

    @api.model
    def _blacklist_decisions(self, code, column, addresses, purpose):
        """{address: blacklisted}: does any company's current consent opt it out?"""
        self.env["res.partner"].flush_model([column])
        self.env["ecrm.consent"].flush_model()
        rows = self.env.execute_query(
            SQL(
                """
                SELECT a.address, COALESCE(bool_or(c.state = 'opt_out'), FALSE)
                  FROM unnest(%(addresses)s::varchar[]) AS a(address)
             LEFT JOIN res_partner p ON %(column)s = a.address
             LEFT JOIN ecrm_consent c
                    ON c.partner_id = p.id AND c.purpose_id = %(purpose)s
                   AND c.channel_id IN (SELECT id FROM ecrm_channel WHERE code = %(code)s)
              GROUP BY a.address
                """,
                addresses=addresses,
                column=SQL.identifier("p", column),
                purpose=purpose.id,
                code=code,
            )
        )
        return dict(rows)

    @api.model
    def _sync_blacklist(self, Blacklist, field, decided):
        """Set the blacklist entries of many addresses, conflict-safe, in two queries.

        Every entry decided is written, even when unchanged: a concurrent transaction
        deciding the same address (another company's opt-out at the same moment) then
        fails to serialize and Odoo retries it with this decision in sight, instead of
        one answering 400 on the unique address or both writing from stale snapshots.
        """
        table = SQL.identifier(Blacklist._table)
        column = SQL.identifier(field)
        now = self.env.cr.now()
        listed = [address for address, add in sorted(decided.items()) if add]
        lifted = [address for address, add in sorted(decided.items()) if not add]
        Blacklist.flush_model()
        if listed:
            self.env["ecrm.api.ingest"]._ingest_write(
                SQL(
                    """
                    INSERT INTO %(table)s (%(column)s, active, create_uid, create_date,
                                           write_uid, write_date)
                    SELECT address, TRUE, %(uid)s, %(now)s, %(uid)s, %(now)s
                      FROM unnest(%(addresses)s::varchar[]) AS a(address)
                    ON CONFLICT (%(column)s) DO UPDATE SET
                       active = TRUE,
                       write_uid = CASE WHEN %(table)s.active THEN %(table)s.write_uid
                                        ELSE EXCLUDED.write_uid END,
                       write_date = CASE WHEN %(table)s.active THEN %(table)s.write_date
                                         ELSE EXCLUDED.write_date END
                    """,
                    table=table,
                    column=column,
                    addresses=listed,
                    uid=self.env.uid,
                    now=now,
                )
            )
        if lifted:
            self.env["ecrm.api.ingest"]._ingest_write(
                SQL(
                    """
                    UPDATE %(table)s SET active = FALSE,
                           write_uid = CASE WHEN active THEN %(uid)s ELSE write_uid END,
                           write_date = CASE WHEN active THEN %(now)s ELSE write_date END
                     WHERE %(column)s = ANY(%(addresses)s)
                    """,
                    table=table,
                    column=column,
                    addresses=lifted,
                    uid=self.env.uid,
                    now=now,
                )
            )
        Blacklist.invalidate_model()
