from datetime import timedelta

from odoo import api, fields, models, tools
from odoo.exceptions import AccessError, ValidationError
from odoo.tools import SQL, OrderedSet

CAPTURE_MODES = [
    ("manual", "Manual"),
    ("automatic", "Automatic"),
    ("api", "API"),
    ("campaign", "Campaign"),
]
OUTCOMES = [
    ("done", "Done"),
    ("sent", "Sent"),
    ("opened", "Opened"),
    ("clicked", "Clicked"),
    ("replied", "Replied"),
    ("bounced", "Bounced"),
    ("failed", "Failed"),
    ("no_answer", "No answer"),
    ("voicemail", "Left a voicemail"),
    ("follow_up", "Follow-up needed"),
    ("interested", "Interested"),
    ("not_interested", "Not interested"),
    ("ordered", "Ordered"),
    ("skipped", "Skipped"),
]
# Captured sources: (model, id) of the record an interaction was captured from.
SOURCE_MODELS = [
    ("sale.order", "Sales Order"),
    ("mail.message", "Message"),
    ("mailing.trace", "Mailing Trace"),
    ("mail.activity", "Activity"),
    ("res.partner", "Contact"),
    ("crm.lead", "Lead/Opportunity"),
    ("ecrm.campaign.recipient", "Campaign Recipient"),
]
# precommit data: what the transaction confirmed or posted, captured in one batch
CAPTURE_PENDING = "ecrm.capture.pending"
# Set by capture, the API and campaigns only (as superuser or in SQL), never by a user:
# the external reference decides idempotency, so a forged one turns the outside system's
# real event into a "duplicate".
SYSTEM_FIELDS = ("capture_mode", "source_system", "external_ref")
# The documents a user may link a hand-logged interaction to.
MANUAL_SOURCE_MODELS = ("res.partner", "sale.order", "crm.lead")


class EcrmInteraction(models.Model):
    _name = "ecrm.interaction"
    _description = "Customer Interaction"
    _inherit = ["utm.mixin"]
    _order = "date desc, id desc"
    _rec_name = "subject"
    _check_company_auto = True

    partner_id = fields.Many2one(
        "res.partner",
        string="Customer",
        required=True,
        index=True,
        ondelete="cascade",
        help="The customer, or the contact person of a customer company.",
    )
    commercial_partner_id = fields.Many2one(
        "res.partner",
        string="Commercial Entity",
        related="partner_id.commercial_partner_id",
        store=True,
        help="The customer company the contact belongs to; figures roll up to it.",
    )
    channel_id = fields.Many2one("ecrm.channel", required=True, index=True, ondelete="restrict")
    channel_code = fields.Char(related="channel_id.code")
    channel_icon = fields.Char(related="channel_id.icon")
    direction = fields.Selection(
        [("inbound", "Inbound"), ("outbound", "Outbound")],
        required=True,
        default="outbound",
        help="Inbound: the customer contacted the company. Outbound: the company contacted "
        "the customer.",
    )
    date = fields.Datetime(required=True, index=True, default=fields.Datetime.now)
    subject = fields.Char()
    summary = fields.Html(sanitize=True, sanitize_overridable=False)
    duration = fields.Float(help="Length of a call or meeting, in hours.")
    outcome = fields.Selection(OUTCOMES)
    user_id = fields.Many2one(
        "res.users",
        string="Salesperson",
        index=True,
        default=lambda self: self.env.user,
        domain="[('share', '=', False)]",
    )
    team_id = fields.Many2one("crm.team", string="Sales Team", check_company=True)
    company_id = fields.Many2one(
        "res.company", required=True, index=True, default=lambda self: self.env.company
    )
    sale_order_id = fields.Many2one(
        "sale.order",
        string="Sales Order",
        index="btree_not_null",
        ondelete="set null",
        check_company=True,
    )
    res_model = fields.Char(string="Source Model", readonly=True)
    res_id = fields.Many2oneReference(string="Source ID", model_field="res_model", readonly=True)
    source_ref = fields.Reference(
        selection="_selection_source_ref",
        string="Source Document",
        compute="_compute_source_ref",
        help="The record this interaction was captured from.",
    )
    capture_mode = fields.Selection(
        CAPTURE_MODES, required=True, default="manual", readonly=True, index=True
    )
    source_system = fields.Char(
        help="The outside system that pushed this interaction (telephony, web chat...)."
    )
    external_ref = fields.Char(
        string="External Reference",
        help="The interaction's id in the outside system; unique per system and company, "
        "so that a retried push never makes a duplicate.",
    )

    # The "Log an Interaction" dialog schedules the next step with the log (not stored).
    followup_date = fields.Date(
        "Follow Up On",
        store=False,
        help="Schedule the next step with the customer: an activity on the customer, for "
        "the salesperson, on this day.",
    )
    followup_summary = fields.Char("Follow-up", store=False)

    web_event_ids = fields.One2many(
        "ecrm.interaction.event",
        "interaction_id",
        string="Web Events",
        help="The page and product views of a web visit pushed through the API.",
    )

    def init(self):
        # The customer's timeline and figures: newest first, per company. The figures
        # aggregate a customer's whole history (17,472 rows for the largest customer of
        # 10 million): the columns they read are included so that they come from the
        # index alone, not from one heap page per row (measured: a bitmap heap scan of
        # 7,786 pages -> an index-only scan of ~150 index pages and 56 heap fetches).
        # Replaces the index without them (18.0.1.0.0, dropped by the 18.0.1.1.0 migration).
        self.env.cr.execute(
            SQL(
                """
                CREATE INDEX IF NOT EXISTS ecrm_interaction_customer_idx
                    ON ecrm_interaction (commercial_partner_id, company_id, date DESC, id DESC)
                    INCLUDE (channel_id, direction, outcome)
                """
            )
        )
        tools.create_index(
            self.env.cr,
            "ecrm_interaction_res_idx",
            self._table,
            ["res_model", "res_id"],
            where="res_model IS NOT NULL",
        )
        # One interaction per captured source and customer (one message to two contacts
        # of the same customer is one interaction).
        self.env.cr.execute(
            SQL(
                """
                CREATE UNIQUE INDEX IF NOT EXISTS ecrm_interaction_capture_uniq
                    ON ecrm_interaction (res_model, res_id, commercial_partner_id)
                 WHERE capture_mode = 'automatic'
                """
            )
        )
        # A retried push never makes a duplicate.
        self.env.cr.execute(
            SQL(
                """
                CREATE UNIQUE INDEX IF NOT EXISTS ecrm_interaction_external_ref_uniq
                    ON ecrm_interaction (company_id, source_system, external_ref)
                 WHERE external_ref IS NOT NULL
                """
            )
        )
        return super().init()

    @api.model
    def _selection_source_ref(self):
        return [
            (model, self.env[model]._description)
            for model, _label in SOURCE_MODELS
            if model in self.env
        ]

    @api.depends("res_model", "res_id")
    def _compute_source_ref(self):
        # One existence check per model: sources such as done activities may be gone.
        existing = set()
        for model, _label in SOURCE_MODELS:
            if model in self.env:
                ids = {i.res_id for i in self if i.res_model == model and i.res_id}
                existing.update(
                    (model, res_id) for res_id in self.env[model].sudo().browse(ids).exists().ids
                )
        for interaction in self:
            key = (interaction.res_model, interaction.res_id)
            interaction.source_ref = key in existing and "%s,%s" % key

    @api.depends("subject", "channel_id", "date")
    def _compute_display_name(self):
        for interaction in self:
            interaction.display_name = interaction.subject or self.env._(
                "%(channel)s on %(date)s",
                channel=interaction.channel_id.name or "",
                date=(interaction.date and fields.Date.to_string(interaction.date)) or "",
            )

    @api.constrains("date")
    def _check_date(self):
        tolerance = timedelta(
            minutes=int(
                self.env["ir.config_parameter"]
                .sudo()  # sudo: a technical setting every logging user needs
                .get_param("ecrm_addon.future_tolerance_minutes", 10)
            )
        )
        limit = fields.Datetime.now() + tolerance
        for interaction in self:
            if interaction.date > limit:
                raise ValidationError(
                    self.env._(
                        "The interaction '%(name)s' is dated %(date)s, in the future. "
                        "Log interactions that happened, at most %(minutes)s minutes ahead.",
                        name=interaction.display_name,
                        date=interaction.date,
                        minutes=int(tolerance.total_seconds() // 60),
                    )
                )

    @api.constrains("duration")
    def _check_duration(self):
        if any(interaction.duration < 0 for interaction in self):
            raise ValidationError(self.env._("The duration of an interaction cannot be negative."))

    @api.constrains("channel_id", "company_id")
    def _check_channel_company(self):
        for interaction in self:
            channel_company = interaction.channel_id.company_id
            if channel_company and channel_company != interaction.company_id:
                raise ValidationError(
                    self.env._(
                        "The channel '%(channel)s' belongs to %(channel_company)s and cannot "
                        "be used for an interaction of %(company)s.",
                        channel=interaction.channel_id.name,
                        channel_company=channel_company.name,
                        company=interaction.company_id.name,
                    )
                )

    @api.model
    def _search(self, domain, offset=0, limit=None, order=None):
        self._capture_pending()  # readers see what this transaction captures
        return super()._search(domain, offset=offset, limit=limit, order=order)

    def flush_model(self, fnames=None):
        self._capture_pending()  # raw SQL flushes the table before it reads it
        return super().flush_model(fnames)

    @api.model_create_multi
    def create(self, vals_list):
        for vals in vals_list:
            if not vals.get("partner_id") and not self.env.context.get("default_partner_id"):
                raise ValidationError(
                    self.env._("An interaction needs a customer: set the Customer field.")
                )
        followups = [
            (vals.pop("followup_date", False), vals.pop("followup_summary", False))
            for vals in vals_list
        ]
        interactions = super().create(vals_list)
        if not self.env.su:
            interactions._check_user_values(creating=True)
        for interaction, (date, summary) in zip(interactions, followups, strict=True):
            if date:
                interaction._schedule_followup(date, summary)
        return interactions

    def _schedule_followup(self, date, summary):
        """The next step after this interaction: a call when it was one, else a to-do,
        on the customer, for the salesperson."""
        self.ensure_one()
        code = "call" if self.channel_id.code == "phone" else "todo"
        self.partner_id.check_access("read")
        # sudo: scheduling an activity needs write access to the customer, which
        # salespeople without CRM may not have; they plan their own next step on a
        # customer they may read and just logged a contact with
        self.partner_id.sudo().activity_schedule(
            f"mail.mail_activity_data_{code}",
            date_deadline=date,
            summary=summary or self.env._("Follow up: %s", self.display_name),
            user_id=(self.user_id or self.env.user).id,
        )

    def write(self, vals):
        if not self.env.su and set(SYSTEM_FIELDS) & set(vals):
            raise AccessError(
                self.env._(
                    "How an interaction was captured, and its outside system and reference, "
                    "are set by the capture itself and cannot be changed."
                )
            )
        result = super().write(vals)
        if not self.env.su and {
            "partner_id",
            "company_id",
            "res_model",
            "subject",
            "summary",
            "outcome",
        } & set(vals):
            self._check_user_values()
        return result

    def _check_user_values(self, creating=False):
        """What users log by hand stays a manual interaction of a customer of its company,
        and says what it was about. (Managers correct captured ones: those keep their
        capture, which no user changes, see write.)"""
        for interaction in self:
            if creating and (
                interaction.capture_mode != "manual"
                or interaction.source_system
                or interaction.external_ref
            ):
                raise AccessError(
                    self.env._(
                        "Interactions you log are manual: captured and API interactions come "
                        "from their channels only."
                    )
                )
            if interaction.capture_mode == "manual" and not (
                interaction.subject
                or interaction.outcome
                or not tools.is_html_empty(interaction.summary)
            ):
                raise ValidationError(
                    self.env._(
                        "Say what the interaction was about: give it a subject, notes or an "
                        "outcome."
                    )
                )
            if interaction.res_model and interaction.res_model not in MANUAL_SOURCE_MODELS:
                raise ValidationError(
                    self.env._(
                        "A logged interaction can only refer to a customer, a sales order or "
                        "a lead."
                    )
                )
            # sudo: the customer's company, even for a customer the user cannot read
            partner_company = interaction.sudo().partner_id.company_id
            if partner_company and partner_company != interaction.company_id:
                raise ValidationError(
                    self.env._(
                        "The customer of an interaction of %(company)s must be shared or "
                        "belong to %(company)s.",
                        company=interaction.company_id.name,
                    )
                )

    @api.model
    def _action_log_interaction(self, partner, res_model=False, res_id=False, order=None):
        """The 'Log an interaction' dialog, from a customer or a sales order."""
        phone = self.env["ecrm.channel"]._get_by_code("phone")
        context = {
            "default_partner_id": partner.id,
            "default_channel_id": phone.id,
            "default_direction": "outbound",
            "default_res_model": res_model,
            "default_res_id": res_id,
        }
        if order:
            context.update(
                default_sale_order_id=order.id,
                default_company_id=order.company_id.id,
                default_team_id=order.team_id.id,
            )
        return {
            "type": "ir.actions.act_window",
            "name": self.env._("Log an Interaction"),
            "res_model": self._name,
            "view_mode": "form",
            "views": [(self.env.ref("ecrm_addon.ecrm_interaction_view_form_log").id, "form")],
            "target": "new",
            "context": context,
        }

    # ------------------------------------------------------------
    # Capture
    # ------------------------------------------------------------

    @api.model
    def _capture_later(self, records, method, model=None):
        """Call ``records.<method>()``, or ``model.<method>(records)``, once for all the
        records collected in the transaction (in the environment that collected them).

        Orders are confirmed and messages posted one at a time: capturing each at once
        cost three queries and one ORM create per order or message (a tenth of the time
        of a confirmation or a chatter email), one batch costs a few queries in all. The
        batch runs before commit (precommit hook), or as soon as interactions are
        searched or flushed in this transaction, so that no reader misses it.
        """
        if not records:
            return
        precommit = self.env.cr.precommit
        if CAPTURE_PENDING not in precommit.data:
            precommit.add(self._capture_precommit)
        # Plain values: tests deep-copy precommit data, which an environment refuses.
        env = records.env
        model_name = model._name if model is not None else None
        key = [env.uid, env.su, dict(env.context), records._name, method, model_name]
        pending = precommit.data.setdefault(CAPTURE_PENDING, [])
        for entry in pending:
            if entry[:-1] == key:
                entry[-1].update(records._ids)
                break
        else:
            pending.append([*key, OrderedSet(records._ids)])

    @api.model
    def _capture_pending(self):
        """Run the captures collected by :meth:`_capture_later`."""
        while pending := self.env.cr.precommit.data.pop(CAPTURE_PENDING, None):
            for uid, su, context, records_model, method, model, ids in pending:
                env = api.Environment(self.env.cr, uid, context, su=su)
                records = env[records_model].browse(ids).exists()
                if records and model:
                    getattr(env[model], method)(records)
                elif records:
                    getattr(records, method)()

    def _capture_precommit(self):
        self._capture_pending()
        self.env.flush_all()  # precommit hooks run after the last flush before commit

    @api.model
    def _capture(self, vals_list, new_sources=False):
        """Create automatically captured interactions, skipping those already captured.

        Each vals dict names its source (``res_model``, ``res_id``) and customer. Duplicates
        (the same source and customer company, in the batch or already logged) are dropped
        with one query for the whole batch. Runs as superuser: capture follows what the
        user did on a document they may edit, whether or not they are an e-CRM user.

        The commercial entity is given: computed after the insert, it costs an UPDATE of
        every new row (and of its indexes); precomputed, a new record per row, which
        sanitizes the summary a second time (a fifth of the create).
        """
        if not vals_list:
            return self.browse()
        partners = self.env["res.partner"].browse({vals["partner_id"] for vals in vals_list})
        commercial = {partner.id: partner.commercial_partner_id.id for partner in partners}
        keys = {(v["res_model"], v["res_id"], commercial[v["partner_id"]]) for v in vals_list}
        if new_sources:
            # Sources just created (a new message, a new trace) cannot be logged yet: only
            # the customers repeated within the batch are dropped.
            seen, unique = set(), []
            for vals in vals_list:
                key = (vals["res_model"], vals["res_id"], commercial[vals["partner_id"]])
                if key not in seen:
                    seen.add(key)
                    unique.append(
                        {"capture_mode": "automatic", "commercial_partner_id": key[2], **vals}
                    )
            # sudo: automatic capture logs what happened on documents the user could act on
            return self.sudo().with_context(tracking_disable=True).create(unique)
        self.flush_model(["res_model", "res_id", "commercial_partner_id", "capture_mode"])
        self.env.cr.execute(
            SQL(
                """
                SELECT res_model, res_id, commercial_partner_id
                  FROM ecrm_interaction
                 WHERE capture_mode IN ('automatic', 'campaign')
                   AND (res_model, res_id, commercial_partner_id) IN (
                       SELECT * FROM unnest(
                           %(models)s::varchar[], %(ids)s::int[], %(partners)s::int[]))
                """,
                models=[key[0] for key in keys],
                ids=[key[1] for key in keys],
                partners=[key[2] for key in keys],
            )
        )
        seen = set(self.env.cr.fetchall())
        to_create = []
        for vals in vals_list:
            key = (vals["res_model"], vals["res_id"], commercial[vals["partner_id"]])
            if key not in seen:
                seen.add(key)
                to_create.append(
                    {"capture_mode": "automatic", "commercial_partner_id": key[2], **vals}
                )
        # sudo: automatic capture logs what happened on documents the user could act on
        return self.sudo().with_context(tracking_disable=True).create(to_create)
