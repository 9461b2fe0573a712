import math
from ast import literal_eval

import psycopg2

from odoo import api, fields, models
from odoo.exceptions import UserError, ValidationError
from odoo.osv import expression
from odoo.tools import SQL

# What a wrong domain raises while it is parsed, checked or searched.
DOMAIN_ERRORS = (
    ValueError,
    SyntaxError,
    KeyError,
    TypeError,
    IndexError,
    AttributeError,
    OverflowError,
    MemoryError,
    RecursionError,
    UserError,
    psycopg2.DataError,
    psycopg2.ProgrammingError,
)


class EcrmSegment(models.Model):
    """A saved selection of a company's customers, on any customer field and score.

    Dynamic segments are evaluated whenever they are used; frozen ones keep the list
    of customers they had when frozen, with the date.
    """

    _name = "ecrm.segment"
    _description = "Customer Segment"
    _order = "sequence, name, id"
    _check_company_auto = True

    name = fields.Char(required=True, translate=True)
    sequence = fields.Integer(default=10)
    active = fields.Boolean(default=True)
    code = fields.Char(help="Technical code of the ready-made segments.")
    description = fields.Text(translate=True)
    company_id = fields.Many2one(
        "res.company",
        required=True,
        index=True,
        default=lambda self: self.env.company,
        help="Scores, interaction figures and consent are those of this company.",
    )
    domain = fields.Char(
        default="[]",
        required=True,
        help="Which customers belong to the segment (on the customer fields, including their "
        "scores, contact figures and consent in the segment's company).",
    )
    mode = fields.Selection(
        [("dynamic", "Dynamic"), ("frozen", "Frozen")],
        required=True,
        default="dynamic",
        help="Dynamic: evaluated whenever used. Frozen: the customers it held when frozen.",
    )
    partner_ids = fields.Many2many(
        "res.partner",
        "ecrm_segment_partner_rel",
        "segment_id",
        "partner_id",
        string="Frozen Customers",
        readonly=True,
        check_company=True,
    )
    frozen_date = fields.Datetime(readonly=True)
    partner_count = fields.Integer("Customers", compute="_compute_partner_count")
    mailing_list_id = fields.Many2one(
        "mailing.list",
        readonly=True,
        ondelete="set null",
        help="Mailing list refreshed from this segment.",
    )

    @api.depends("domain", "mode", "company_id", "partner_ids")
    def _compute_partner_count(self):
        for segment in self:
            segment.partner_count = segment._partners_model().search_count(
                segment._get_partner_domain()
            )

    @api.constrains("domain", "company_id")
    def _check_domain(self):
        for segment in self:
            try:
                domain = segment._get_domain()
                # A savepoint: a value the database refuses (an integer out of range, a
                # string for an id) must not abort the user's transaction.
                with self.env.cr.savepoint():
                    segment._partners_model().search_count(domain, limit=1)
            except DOMAIN_ERRORS as error:
                raise ValidationError(
                    self.env._(
                        "The segment '%(name)s' has an invalid domain: %(error)s",
                        name=segment.name,
                        error=str(error).split("\n", 1)[0][:200],
                    )
                ) from error

    def _partners_model(self):
        """Customers as seen from the segment's company (scores, consent, figures)."""
        self.ensure_one()
        return self.env["res.partner"].with_company(self.company_id)

    def _get_domain(self):
        self.ensure_one()
        domain = literal_eval(self.domain or "[]")
        if not isinstance(domain, list):
            raise ValueError(self.env._("a domain is a list of conditions"))
        for term in domain:
            if isinstance(term, str) and term in expression.DOMAIN_OPERATORS:
                continue
            if not (isinstance(term, list | tuple) and len(term) == 3):
                raise ValueError(
                    self.env._(
                        "%(term)r is not a condition (field, operator, value) nor one of "
                        "'&', '|', '!'",
                        term=term,
                    )
                )
            values = term[2] if isinstance(term[2], list | tuple) else [term[2]]
            if any(isinstance(value, float) and not math.isfinite(value) for value in values):
                raise ValueError(self.env._("%(term)r compares with an infinite number", term=term))
        return [*self._customers_domain(), *expression.normalize_domain(domain)]

    def _customers_domain(self):
        """The segment's company's customers as the scores see them: commercial entities
        (a company, or a person without a parent company), never their contact persons."""
        return [
            "|",
            ("company_id", "=", False),
            ("company_id", "=", self.company_id.id),
            "|",
            ("is_company", "=", True),
            ("parent_id", "=", False),
        ]

    def _get_partner_domain(self):
        """Domain of the segment's customers right now (frozen: the kept list)."""
        self.ensure_one()
        if self.mode == "frozen":
            return [*self._customers_domain(), ("ecrm_frozen_segment_ids", "in", self.id)]
        return self._get_domain()

    def _search_partners(self):
        """A Query of the segment's customers, to use in SQL or in another domain."""
        self.ensure_one()
        return self._partners_model()._search(self._get_partner_domain())

    def action_preview(self):
        self.ensure_one()
        return {
            "type": "ir.actions.act_window",
            "name": self.name,
            "res_model": "res.partner",
            "view_mode": "list,kanban,form",
            # The domain itself (a list): the web client gets it as JSON, a Query would not do.
            "domain": self._get_partner_domain(),
            "context": {"allowed_company_ids": [self.company_id.id]},
        }

    def action_freeze(self):
        """Keep the customers the segment holds now, set-based."""
        self.env.flush_all()  # the raw SQL below reads what the domain names
        for segment in self:
            query = segment._partners_model()._search(segment._get_domain())
            self.env.cr.execute(
                SQL("DELETE FROM ecrm_segment_partner_rel WHERE segment_id = %s", segment.id)
            )
            self.env.cr.execute(
                SQL(
                    """INSERT INTO ecrm_segment_partner_rel (segment_id, partner_id)
                       SELECT %s, id FROM (%s) q""",
                    segment.id,
                    query.select("res_partner.id"),
                )
            )
            segment.write({"mode": "frozen", "frozen_date": fields.Datetime.now()})
        self.invalidate_recordset(["partner_ids", "partner_count"])
        return True

    def action_unfreeze(self):
        # The kept list is emptied in SQL: clearing the many2many through the ORM reads
        # every kept customer first (minutes for a segment of a million).
        self.env.cr.execute(
            SQL("DELETE FROM ecrm_segment_partner_rel WHERE segment_id IN %s", tuple(self.ids))
        )
        self.invalidate_recordset(["partner_ids"])
        self.env["res.partner"].invalidate_model(["ecrm_frozen_segment_ids"])
        self.write({"mode": "dynamic", "frozen_date": False})
        return True

    def action_refresh_mailing_list(self):
        """Make the segment's mailing list hold exactly its customers with an email."""
        self.ensure_one()
        if not self.env.user.has_group("mass_mailing.group_mass_mailing_user"):
            raise UserError(self.env._("Only email marketing users refresh mailing lists."))
        mailing_list = self.mailing_list_id or self.env["mailing.list"].create({"name": self.name})
        self.mailing_list_id = mailing_list
        self.env.flush_all()  # the raw SQL below reads partners, contacts and lists
        query = self._partners_model()._search(
            [*self._get_partner_domain(), ("email_normalized", "!=", False)]
        )
        partners = query.select("res_partner.id", "res_partner.name", "res_partner.email",
                                "res_partner.email_normalized")  # fmt: skip
        self.env["mailing.contact"].flush_model()
        self.env["mailing.subscription"].flush_model()
        cr = self.env.cr
        # Customers without a mailing contact get one (one per address).
        cr.execute(
            SQL(
                """
                INSERT INTO mailing_contact (name, email, email_normalized,
                                             create_uid, create_date, write_uid, write_date)
                SELECT DISTINCT ON (s.email_normalized) s.name, s.email, s.email_normalized,
                       %(uid)s, now() at time zone 'UTC', %(uid)s, now() at time zone 'UTC'
                  FROM (%(partners)s) s(id, name, email, email_normalized)
                 WHERE NOT EXISTS (SELECT 1 FROM mailing_contact c
                                    WHERE c.email_normalized = s.email_normalized)
                """,
                uid=self.env.uid,
                partners=partners,
            )
        )
        # The list holds exactly the segment's addresses; opt-outs are kept as they are.
        cr.execute(
            SQL(
                """
                WITH wanted AS (
                    SELECT DISTINCT ON (c.email_normalized) c.id
                      FROM mailing_contact c
                      JOIN (%(partners)s) s(id, name, email, email_normalized)
                        ON s.email_normalized = c.email_normalized
                  ORDER BY c.email_normalized, c.id
                ), removed AS (
                    DELETE FROM mailing_subscription m
                     WHERE m.list_id = %(list)s
                       AND m.contact_id NOT IN (SELECT id FROM wanted)
                )
                INSERT INTO mailing_subscription (contact_id, list_id, opt_out,
                                                  create_uid, create_date, write_uid, write_date)
                SELECT w.id, %(list)s, FALSE, %(uid)s, now() at time zone 'UTC', %(uid)s,
                       now() at time zone 'UTC'
                  FROM wanted w
                ON CONFLICT (contact_id, list_id) DO NOTHING
                """,
                partners=partners,
                list=mailing_list.id,
                uid=self.env.uid,
            )
        )
        self.env["mailing.contact"].invalidate_model()
        self.env["mailing.subscription"].invalidate_model()
        mailing_list.invalidate_recordset()
        return {
            "type": "ir.actions.act_window",
            "res_model": "mailing.list",
            "res_id": mailing_list.id,
            "view_mode": "form",
        }

    def action_create_mailing(self):
        """A new email mailing to this segment (its recipients are resolved at send time)."""
        self.ensure_one()
        return {
            "type": "ir.actions.act_window",
            "res_model": "mailing.mailing",
            "view_mode": "form",
            "context": {
                "default_ecrm_segment_id": self.id,
                "default_mailing_model_id": self.env["ir.model"]._get_id("res.partner"),
                "default_subject": self.name,
            },
        }
