import json
import math
import secrets
from datetime import timedelta

from markupsafe import Markup

from odoo import api, fields, models
from odoo.exceptions import AccessError, UserError
from odoo.tools import SQL

from .ecrm_campaign_recipient import DELIVERED

GOALS = [
    ("order", "An order"),
    ("repeat", "A repeat order"),
    ("reactivation", "A reactivation"),
]
Z_95 = 1.959964
# Draws of coupon codes before giving up (a draw collides with odds of about 1e-5).
MAX_CODE_ATTEMPTS = 5
# The preference centre link of a campaign email, replaced per recipient when it is sent;
# "/view" keeps it out of the link tracker, as Email Marketing's own view link.
PREFERENCE_LINK_MARKER = "/ecrm/preferences/view"
# Under this many customers, a holdout's conversion rate is too uncertain to compare.
MIN_HOLDOUT = 100


class EcrmCampaign(models.Model):
    """A one-to-one campaign: each customer of a segment gets their own channel, content
    and offer, a random holdout is kept out, and the results are measured against it.

    Built on ``utm.campaign`` (delegation), so UTM attribution and mailing statistics keep
    working.
    """

    _name = "ecrm.campaign"
    _description = "One-to-One Campaign"
    _inherits = {"utm.campaign": "utm_campaign_id"}
    _order = "id desc"
    _check_company_auto = True

    utm_campaign_id = fields.Many2one(
        "utm.campaign", required=True, ondelete="cascade", string="UTM Campaign"
    )
    company_id = fields.Many2one(
        "res.company", required=True, index=True, default=lambda self: self.env.company
    )
    currency_id = fields.Many2one(related="company_id.currency_id")
    segment_id = fields.Many2one(
        "ecrm.segment", string="Target Segment", required=True, check_company=True
    )
    goal = fields.Selection(GOALS, required=True, default="order")
    state = fields.Selection(
        [("draft", "Draft"), ("prepared", "Prepared"), ("sent", "Sent"), ("done", "Done")],
        default="draft",
        required=True,
        readonly=True,
    )
    date_start = fields.Date(default=fields.Date.context_today, required=True)
    date_end = fields.Date()
    attribution_days = fields.Integer(
        "Attribution Window (days)",
        default=30,
        help="An order within this many days after the touch (or the start, for the "
        "holdout) counts as a conversion.",
    )
    budget = fields.Monetary()
    fixed_cost = fields.Monetary(help="Creative, agency and other costs not per contact.")
    holdout_percent = fields.Float(
        "Holdout (%)",
        default=10.0,
        help="Share of each RFM segment kept out of the campaign to measure its effect.",
    )
    channel_line_ids = fields.One2many(
        "ecrm.campaign.channel", "campaign_id", string="Channels", copy=True
    )
    prefer_preferred_channel = fields.Boolean(
        help="Use the customer's preferred inbound channel when they agreed to it."
    )
    email_subject = fields.Char(
        help="Type {{ to insert the customer's name or another customer field."
    )
    # Sanitized as Email Marketing's bodies are: QWeb placeholders stay, scripts and event
    # handlers go (the body is shown in the next user's session).
    email_body = fields.Html(
        sanitize="email_outgoing",
        help="Written once, rendered for each customer: type /field to insert the "
        "customer's name, tier, segment or personal coupon code (Campaign Coupon Code). "
        "A footer with the preference centre and unsubscribe links is added to every "
        "email.",
    )
    render_model = fields.Char(
        compute="_compute_render_model",
        help="The model the email's placeholders are read on: the customer.",
    )
    sms_body = fields.Text("SMS Text")
    call_script = fields.Html()
    letter_body = fields.Html()
    coupon_program_id = fields.Many2one(
        "loyalty.program",
        string="Coupon Program",
        domain="[('program_type', 'in', ('coupons', 'promo_code', 'next_order_coupons'))]",
        check_company=True,
        help="Each contacted customer gets a unique code of this program.",
    )
    offer_ids = fields.One2many("ecrm.campaign.offer", "campaign_id", string="Offers by Tier")
    recipient_ids = fields.One2many("ecrm.campaign.recipient", "campaign_id")
    mailing_ids = fields.One2many("mailing.mailing", "ecrm_campaign_id")
    # Results
    targeted_count = fields.Integer("Targeted", compute="_compute_counts")
    target_group_count = fields.Integer(
        "Contacted Group",
        compute="_compute_counts",
        help="Customers the campaign set out to contact when it was sent, whether or not "
        "the touch reached them: the group compared with the holdout.",
    )
    contacted_count = fields.Integer(
        "Contacted",
        compute="_compute_counts",
        help="Touches that reached the customer: emails and SMS sent (and not bounced or "
        "failed), calls made, letters printed.",
    )
    delivery_summary = fields.Html(compute="_compute_counts", sanitize=False)
    skipped_count = fields.Integer("Skipped", compute="_compute_counts")
    holdout_count = fields.Integer("Holdout", compute="_compute_counts")
    converted_count = fields.Integer("Converted", compute="_compute_counts")
    revenue = fields.Monetary(compute="_compute_counts")
    cost = fields.Monetary(compute="_compute_counts")
    conversion_rate = fields.Float(compute="_compute_uplift", digits=(16, 4))
    holdout_conversion_rate = fields.Float(compute="_compute_uplift", digits=(16, 4))
    uplift = fields.Float(
        compute="_compute_uplift",
        digits=(16, 4),
        help="Conversion rate of the contacted group minus the holdout's.",
    )
    uplift_low = fields.Float("Uplift (95% low)", compute="_compute_uplift", digits=(16, 4))
    uplift_high = fields.Float("Uplift (95% high)", compute="_compute_uplift", digits=(16, 4))
    revenue_per_customer = fields.Monetary(compute="_compute_uplift")
    holdout_revenue_per_customer = fields.Monetary(compute="_compute_uplift")
    incremental_revenue = fields.Monetary(
        compute="_compute_uplift",
        help="(revenue per contacted customer - per holdout customer) x contacted customers.",
    )
    incremental_revenue_low = fields.Monetary(compute="_compute_uplift")
    incremental_revenue_high = fields.Monetary(compute="_compute_uplift")
    roi = fields.Float(
        "ROI", compute="_compute_uplift", digits=(16, 4), help="(incremental revenue - cost) / cost"
    )
    roi_low = fields.Float("ROI (95% low)", compute="_compute_uplift", digits=(16, 4))
    roi_high = fields.Float("ROI (95% high)", compute="_compute_uplift", digits=(16, 4))
    uplift_significant = fields.Boolean(
        "Significant",
        compute="_compute_uplift",
        help="The 95% interval of the uplift does not cover 0: the difference between the "
        "groups is unlikely to be chance.",
    )
    holdout_warning = fields.Char(compute="_compute_counts")

    @api.depends(
        "recipient_ids.state",
        "recipient_ids.delivery",
        "recipient_ids.converted",
        "recipient_ids.revenue",
    )
    def _compute_counts(self):
        """Targeted: the customers assigned to be contacted; Contacted Group: those of
        them the campaign was sent to; Holdout: those kept out and still in the
        comparison; Contacted: the touches that reached the customer; Skipped: who could
        not be contacted (before or at send time), in either group."""
        Recipient = self.env["ecrm.campaign.recipient"]
        for campaign in self:
            groups = Recipient._read_group(
                [("campaign_id", "=", campaign.id)],
                ["group", "state", "converted"],
                ["__count", "revenue:sum"],
            )
            counts = dict.fromkeys(("target", "holdout", "sent", "skipped", "converted"), 0)
            revenue = 0.0
            for group, state, converted, count, amount in groups:
                if state == "skipped":
                    counts["skipped"] += count
                    continue
                counts[group] += count
                if group == "target" and state == "sent":
                    counts["sent"] += count
                    if converted:
                        counts["converted"] += count
                        revenue += amount
            deliveries = Recipient._read_group(
                [("campaign_id", "=", campaign.id), ("delivery", "!=", False)],
                ["channel_id", "delivery"],
                ["__count"],
            )
            counts["contacted"] = sum(n for _ch, state, n in deliveries if state in DELIVERED)
            campaign.delivery_summary = campaign._delivery_summary(deliveries)
            campaign.targeted_count = counts["target"]
            campaign.target_group_count = counts["sent"]
            campaign.holdout_count = counts["holdout"]
            campaign.contacted_count = counts["contacted"]
            campaign.skipped_count = counts["skipped"]
            campaign.converted_count = counts["converted"]
            campaign.revenue = revenue
            campaign.cost = campaign._get_cost()
            small = (
                campaign.state != "draft"
                and campaign.holdout_percent > 0
                and counts["holdout"] < MIN_HOLDOUT
            )
            campaign.holdout_warning = small and self.env._(
                "The holdout holds %(count)s customers, fewer than %(min)s: its "
                "conversion rate is too uncertain to measure the campaign's effect. "
                "Target a larger segment or a larger holdout share.",
                count=counts["holdout"],
                min=MIN_HOLDOUT,
            )

    @api.constrains("email_body", "email_subject")
    def _check_email_placeholders(self):
        """Only Mail Template Editors write code in an email; others use the customer's
        placeholders (as mail templates and mailings are checked). The campaign is no
        template, so the check is here: else an administrator sending the campaign
        would run a user's code in the mailing queue."""
        if self.env.su or self.env.user.has_group("mail.group_mail_template_editor"):
            return
        Render = self.env["mail.render.mixin"]
        for campaign in self:
            if Render._has_unsafe_expression_template_qweb(
                campaign.email_body, "res.partner"
            ) or Render._has_unsafe_expression_template_inline_template(
                campaign.email_subject, "res.partner"
            ):
                raise AccessError(
                    self.env._(
                        "Only Mail Template Editors may write code in a campaign email: use "
                        "the customer's placeholders (type /field in the email)."
                    )
                )

    def _compute_render_model(self):
        self.render_model = "res.partner"

    def _delivery_summary(self, deliveries):
        """A table of the touches per channel and delivery, as Email Marketing shows a
        mailing's (every value escaped: the labels come from the database)."""
        if not deliveries:
            return False
        states = dict(self.env["ecrm.campaign.recipient"]._fields["delivery"].selection)
        by_channel = {}
        for channel, state, count in deliveries:
            by_channel.setdefault(channel, {})[state] = count
        columns = [state for state in states if any(state in c for c in by_channel.values())]
        head = Markup("").join(Markup("<th class='text-end'>%s</th>") % states[c] for c in columns)
        rows = Markup("").join(
            Markup("<tr><td>%s</td>%s</tr>")
            % (
                channel.name,
                Markup("").join(
                    Markup("<td class='text-end'>%s</td>") % counts.get(c, 0) for c in columns
                ),
            )
            for channel, counts in by_channel.items()
        )
        return Markup(
            "<table class='table table-sm o_ecrm_delivery'><thead><tr><th>%s</th>%s</tr></thead>"
            "<tbody>%s</tbody></table>"
        ) % (self.env._("Channel"), head, rows)

    def _get_cost(self):
        """Fixed cost plus each channel's cost per contact, in the company's currency."""
        self.ensure_one()
        per_channel = self.env["ecrm.campaign.recipient"]._read_group(
            [("campaign_id", "=", self.id), ("state", "=", "sent")], ["channel_id"], ["__count"]
        )
        return self.fixed_cost + sum(
            channel.with_company(self.company_id).cost_per_contact * count
            for channel, count in per_channel
        )

    @api.depends("recipient_ids.converted", "recipient_ids.revenue", "recipient_ids.state")
    def _compute_uplift(self):
        for campaign in self:
            stats = campaign._get_group_stats()
            contacted, holdout = stats["contacted"], stats["holdout"]
            values = {
                "conversion_rate": contacted["rate"],
                "holdout_conversion_rate": holdout["rate"],
                "uplift": 0.0,
                "uplift_low": 0.0,
                "uplift_high": 0.0,
                "revenue_per_customer": contacted["mean"],
                "holdout_revenue_per_customer": holdout["mean"],
                "incremental_revenue": 0.0,
                "incremental_revenue_low": 0.0,
                "incremental_revenue_high": 0.0,
                "roi": 0.0,
                "roi_low": 0.0,
                "roi_high": 0.0,
                "uplift_significant": False,
            }
            if contacted["n"] and holdout["n"]:
                values.update(campaign._uplift_values(contacted, holdout))
            campaign.update(values)

    def _uplift_values(self, contacted, holdout):
        """Differences with 95% normal confidence intervals (two independent groups)."""
        p1, n1, p0, n0 = contacted["rate"], contacted["n"], holdout["rate"], holdout["n"]
        uplift = p1 - p0
        se = math.sqrt(p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0)
        delta = contacted["mean"] - holdout["mean"]
        se_mean = math.sqrt(contacted["var"] / n1 + holdout["var"] / n0)
        incremental = delta * n1
        low, high = (delta - Z_95 * se_mean) * n1, (delta + Z_95 * se_mean) * n1
        cost = self._get_cost()
        return {
            "uplift": uplift,
            "uplift_low": uplift - Z_95 * se,
            "uplift_high": uplift + Z_95 * se,
            "uplift_significant": not (uplift - Z_95 * se <= 0 <= uplift + Z_95 * se),
            "incremental_revenue": incremental,
            "incremental_revenue_low": low,
            "incremental_revenue_high": high,
            # No cost, no return on it: the form shows no ROI then.
            "roi": (incremental - cost) / cost if cost else 0.0,
            "roi_low": (low - cost) / cost if cost else 0.0,
            "roi_high": (high - cost) / cost if cost else 0.0,
        }

    def _get_group_stats(self):
        """n, conversion rate, mean and sample variance of the revenue per customer, for the
        contacted group as assigned (intention to treat: a failed email stays in it) and
        the holdout, both after the same checks at send time, in one query."""
        self.ensure_one()
        self.env["ecrm.campaign.recipient"].flush_model()
        self.env.cr.execute(
            SQL(
                """
                SELECT CASE WHEN "group" = 'holdout' THEN 'holdout' ELSE 'contacted' END,
                       count(*), avg(converted::int), avg(revenue), var_samp(revenue)
                  FROM ecrm_campaign_recipient
                 WHERE campaign_id = %s AND sent_at IS NOT NULL
                   AND (("group" = 'holdout' AND state = 'holdout')
                        OR ("group" = 'target' AND state = 'sent'))
              GROUP BY 1
                """,
                self.id,
            )
        )
        stats = {
            key: {"n": 0, "rate": 0.0, "mean": 0.0, "var": 0.0} for key in ("contacted", "holdout")
        }
        for key, n, rate, mean, var in self.env.cr.fetchall():
            stats[key] = {
                "n": n,
                "rate": float(rate or 0),
                "mean": float(mean or 0),
                "var": float(var or 0),
            }
        return stats

    # ------------------------------------------------------------
    # Preparation
    # ------------------------------------------------------------

    def action_prepare(self):
        """Choose recipients, channel, contact, offer and holdout of every customer,
        set-based.

        Who cannot be contacted (consent, address, pressure cap) is skipped with the
        reason first; the holdout is then drawn among the customers who would be
        contacted, so that the two groups compared are alike.

        The steps work on a temporary table of the targets (no foreign keys to check, no
        WAL, statistics of its own), and the recipients are inserted once at the end: each
        UPDATE of rows inserted in the same transaction re-checks every foreign key of every
        row, which cost more than the steps themselves.
        """
        for campaign in self:
            if campaign.state != "draft":
                raise UserError(self.env._("Only draft campaigns are prepared."))
            if not campaign.channel_line_ids:
                raise UserError(self.env._("Choose the channels of the campaign first."))
            campaign._prepare_recipients()
            campaign._apply_contact_pressure()
            campaign._choose_channels()
            campaign._draw_holdout()
            campaign._generate_coupons()
            campaign._insert_recipients()
            campaign._log_skips()
            campaign.state = "prepared"
        self.invalidate_recordset()  # the counts, from recipients written in SQL
        small = self.filtered(lambda c: c.holdout_percent and c.holdout_count < MIN_HOLDOUT)
        if len(self) == 1 and small:
            return {
                "type": "ir.actions.client",
                "tag": "display_notification",
                "params": {
                    "type": "warning",
                    "sticky": True,
                    "title": self.env._("Small holdout"),
                    "message": small.holdout_warning,
                    "next": {"type": "ir.actions.client", "tag": "soft_reload"},
                },
            }
        return True

    def _prepare_recipients(self):
        """Fill the temporary table ``ecrm_campaign_prep`` with one row per customer of the
        segment (the commercial entity: a company or a person without a parent company,
        as the scores see customers), with their RFM segment and tier."""
        self.ensure_one()
        self.env.flush_all()
        query = self.segment_id._search_partners()
        self.env.cr.execute(SQL("DROP TABLE IF EXISTS ecrm_campaign_prep"))
        self.env.cr.execute(
            SQL(
                """
                CREATE TEMPORARY TABLE ecrm_campaign_prep ON COMMIT DROP AS
                SELECT c.partner_id, s.segment_id AS stratum_id, s.tier_id,
                       'target'::varchar AS "group", 'planned'::varchar AS state,
                       NULL::varchar AS skip_reason, NULL::int AS channel_id,
                       NULL::int AS contact_id, NULL::int AS program_id,
                       NULL::varchar AS code, NULL::int AS coupon_id
                  FROM (SELECT DISTINCT p.commercial_partner_id AS partner_id
                          FROM (%(query)s) t
                          JOIN res_partner p ON p.id = t.id) c
             LEFT JOIN ecrm_customer_score s
                        ON s.partner_id = c.partner_id AND s.company_id = %(company)s
                """,
                query=query.select("res_partner.id"),
                company=self.company_id.id,
            )
        )
        # Statistics for correct planning of the next steps (as account's currency table).
        self.env.cr.execute(SQL("ANALYZE ecrm_campaign_prep"))

    def _draw_holdout(self):
        """A random holdout, stratified by RFM segment, among the customers who would be
        contacted: the same share of each segment, drawn with a seed of the campaign (the
        same draw when prepared again). The holdout keeps the channel and contact it would
        have had, so that the send-time checks treat it as the contacted group."""
        self.ensure_one()
        self.env.cr.execute(
            SQL(
                """
                WITH ranked AS (
                    SELECT partner_id,
                           row_number() OVER (PARTITION BY stratum_id
                                              ORDER BY md5(%(seed)s || partner_id::text)) AS rank,
                           count(*) OVER (PARTITION BY stratum_id) AS size
                      FROM ecrm_campaign_prep
                     WHERE state = 'planned'
                )
                UPDATE ecrm_campaign_prep t
                   SET "group" = 'holdout', state = 'holdout'
                  FROM ranked r
                 WHERE r.partner_id = t.partner_id AND r.rank <= round(r.size * %(share)s)
                """,
                seed=f"ecrm-{self.id}-",
                share=max(0.0, min(self.holdout_percent, 100.0)) / 100.0,
            )
        )

    def _contact_pressure_sql(self, table, states):
        """An UPDATE of ``table`` (the preparation's or the recipients) skipping, among the
        rows in ``states``, the customers who already got the company's maximum of
        marketing touches (counted per customer, over all its contact persons)."""
        company = self.company_id
        self.env["ecrm.interaction"].flush_model()
        return SQL(
            """
            UPDATE %(table)s r
               SET state = 'skipped', skip_reason = 'capped'
              FROM (SELECT commercial_partner_id, count(*) AS touches
                      FROM ecrm_interaction
                     WHERE company_id = %(company)s AND direction = 'outbound'
                       AND (capture_mode = 'campaign' OR res_model = 'mailing.trace')
                       AND COALESCE(outcome, 'sent') <> 'skipped'
                       AND date > %(since)s
                  GROUP BY commercial_partner_id) t
             WHERE r.state = ANY(%(states)s) AND t.commercial_partner_id = r.partner_id
               AND t.touches >= %(cap)s %(extra)s
         RETURNING r.partner_id
            """,
            table=SQL.identifier(table),
            company=company.id,
            since=fields.Datetime.now() - timedelta(days=company.ecrm_pressure_days or 30),
            cap=company.ecrm_pressure_max_touches,
            states=list(states),
            extra=SQL("AND r.campaign_id = %s", self.id)
            if table == "ecrm_campaign_recipient"
            else SQL(),
        )

    def _apply_contact_pressure(self):
        """Skip customers who already got the company's maximum of marketing touches."""
        self.ensure_one()
        if self.company_id.ecrm_pressure_max_touches:
            self.env.cr.execute(self._contact_pressure_sql("ecrm_campaign_prep", ["planned"]))

    def _choose_channels(self):
        """The first channel, in the marketer's order, the customer agreed to (optionally
        their preferred inbound one first); otherwise skipped with the first channel's
        reason. One UPDATE, with the reasons of ``ecrm.consent._contact_sql``.

        A customer is reached on its own address for the channel or, when it has none,
        on the first of its contact persons (by creation) that has one: that person is
        the recipient's contact, whose consent and blacklist decide."""
        self.ensure_one()
        channels = self.channel_line_ids.sorted("sequence").channel_id
        Consent = self.env["ecrm.consent"]
        aliases = [SQL.identifier(f"reason_{index}") for index in range(len(channels))]
        contacts = [SQL.identifier(f"contact_{index}") for index in range(len(channels))]
        self.env["res.partner"].flush_model(["commercial_partner_id", "active", "type"])
        joins = []
        for channel, alias in zip(channels, aliases, strict=True):
            from_clause, reason, _allowed = Consent._contact_sql(channel, company=self.company_id)
            joins.append(
                SQL(
                    """LEFT JOIN (
                           SELECT DISTINCT ON (p.commercial_partner_id)
                                  p.commercial_partner_id AS partner_id, p.id AS contact_id,
                                  %(reason)s AS reason
                             FROM %(from)s
                            WHERE p.commercial_partner_id IN (
                                      SELECT partner_id FROM ecrm_campaign_prep
                                       WHERE state = 'planned')
                              AND (p.id = p.commercial_partner_id
                                   OR (p.active AND p.type = 'contact'))
                         ORDER BY p.commercial_partner_id,
                                  COALESCE(%(reason)s = 'no_address', FALSE),
                                  p.id <> p.commercial_partner_id, p.id
                       ) %(alias)s ON %(alias)s.partner_id = t.partner_id""",
                    reason=reason,
                    alias=alias,
                    **{"from": from_clause},
                )
            )
        choices = []
        if self.prefer_preferred_channel:
            choices += [
                SQL("WHEN y.preferred = %s AND y.%s IS NULL THEN %s", channel.id, alias, channel.id)
                for channel, alias in zip(channels, aliases, strict=True)
            ]
        choices += [
            SQL("WHEN y.%s IS NULL THEN %s", alias, channel.id)
            for channel, alias in zip(channels, aliases, strict=True)
        ]
        contact_of_channel = SQL(" ").join(
            SQL("WHEN %s THEN z.%s", channel.id, contact)
            for channel, contact in zip(channels, contacts, strict=True)
        )
        self.env.cr.execute(
            SQL(
                """
                UPDATE ecrm_campaign_prep r
                   SET channel_id = x.channel_id,
                       contact_id = x.contact_id,
                       state = CASE WHEN x.channel_id IS NULL THEN 'skipped' ELSE 'planned' END,
                       skip_reason = CASE WHEN x.channel_id IS NULL
                                          THEN COALESCE(x.first_reason, 'no_consent') END
                  FROM (SELECT z.partner_id, z.first_reason, z.channel_id,
                               CASE z.channel_id %(contact_of_channel)s END AS contact_id
                          FROM (SELECT y.*, CASE %(choices)s END AS channel_id
                                  FROM (SELECT t.partner_id, %(preferred)s AS preferred,
                                               %(reasons)s, %(first)s.reason AS first_reason
                                          FROM ecrm_campaign_prep t %(joins)s
                                         WHERE t.state = 'planned') y) z) x
                 WHERE r.partner_id = x.partner_id
                """,
                choices=SQL(" ").join(choices),
                contact_of_channel=contact_of_channel,
                preferred=self._preferred_channel_sql(),
                reasons=SQL(", ").join(
                    SQL("%s.reason AS %s, %s.contact_id AS %s", alias, alias, alias, contact)
                    for alias, contact in zip(aliases, contacts, strict=True)
                ),
                first=aliases[0],
                joins=SQL(" ").join(joins),
            )
        )

    def _preferred_channel_sql(self):
        """The preferred inbound channel of the target t in the campaign's company, as
        ``res.partner.ecrm_preferred_channel_id`` computes it, or NULL when not used."""
        if not self.prefer_preferred_channel:
            return SQL("NULL::int")
        self.env["ecrm.interaction"].flush_model(
            ["commercial_partner_id", "company_id", "direction", "outcome", "channel_id", "date"]
        )
        self.env["res.partner"].flush_model(["commercial_partner_id"])
        return SQL(
            """(SELECT i.channel_id FROM ecrm_interaction i
                 WHERE i.commercial_partner_id = (SELECT rp.commercial_partner_id
                                                    FROM res_partner rp
                                                   WHERE rp.id = t.partner_id)
                   AND i.company_id = %s AND i.direction = 'inbound'
                   AND i.outcome IS DISTINCT FROM 'skipped'
              GROUP BY i.channel_id
              ORDER BY count(*) DESC, max(i.date) DESC
                 LIMIT 1)""",
            self.company_id.id,
        )

    def _generate_coupons(self):
        """A unique code per contacted customer, from the tier's program or the default one.

        Cards are inserted in bulk, like ``loyalty.card.create`` would make them but without
        the chatter (as ``sale_loyalty`` does with ``tracking_disable``): active, in the
        program's company, with the points of the program's cheapest reward so that the
        code can be used, and a history line for the points issued, as Odoo's coupon
        wizard writes. A code is '044' and 13 hex digits (52 bits, Odoo draws 32) of a
        keyed hash of the customer, with a random 128-bit key per draw that is never
        stored; the rare code that collides with an existing card or a program's trigger
        code is drawn again with a new key.
        """
        self.ensure_one()
        if not self.coupon_program_id and not self.offer_ids:
            return
        self.env.flush_all()
        self.env.cr.execute(
            SQL(
                """
                UPDATE ecrm_campaign_prep t
                   SET program_id = COALESCE(
                           (SELECT o.program_id FROM ecrm_campaign_offer o
                             WHERE o.campaign_id = %(campaign)s AND o.tier_id = t.tier_id
                          ORDER BY o.id DESC LIMIT 1), %(default)s)
                 WHERE t.state = 'planned'
                """,
                campaign=self.id,
                default=self.coupon_program_id.id or None,
            )
        )
        for _attempt in range(MAX_CODE_ATTEMPTS):
            self.env.cr.execute(
                SQL(
                    """
                    UPDATE ecrm_campaign_prep
                       SET code = '044' || left(encode(sha256(convert_to(
                                      %s || partner_id::text, 'UTF8')), 'hex'), 13)
                     WHERE state = 'planned' AND program_id IS NOT NULL AND coupon_id IS NULL
                    """,
                    secrets.token_hex(16),
                )
            )
            self.env.cr.execute(self._insert_coupons_sql())
            remaining = self.env.execute_query(
                SQL(
                    "SELECT count(*) FROM ecrm_campaign_prep WHERE state = 'planned' "
                    "AND program_id IS NOT NULL AND coupon_id IS NULL"
                )
            )[0][0]
            if not remaining:
                break
        else:
            raise UserError(self.env._("Could not draw unique coupon codes, try again."))
        self.env["loyalty.card"].invalidate_model()
        self.env["loyalty.history"].invalidate_model()

    def _insert_coupons_sql(self):
        """Insert the cards of the targets still without one, unless their code collides,
        and their history, and note them on the targets."""
        programs = self.coupon_program_id | self.offer_ids.program_id
        points = {
            program.id: min(program.reward_ids.mapped("required_points"), default=1)
            for program in programs
        }
        return SQL(
            """
            WITH cards AS (
                INSERT INTO loyalty_card (program_id, company_id, partner_id, code, points, active,
                                          create_uid, create_date, write_uid, write_date)
                SELECT t.program_id, g.company_id, t.partner_id, t.code,
                       (%(points)s::jsonb ->> t.program_id::text)::float, TRUE,
                       %(uid)s, now() at time zone 'UTC', %(uid)s, now() at time zone 'UTC'
                  FROM ecrm_campaign_prep t
                  JOIN loyalty_program g ON g.id = t.program_id
                 WHERE t.state = 'planned' AND t.coupon_id IS NULL
                   AND NOT EXISTS (SELECT 1 FROM loyalty_rule lr
                                    WHERE lr.mode = 'with_code' AND lr.code = t.code)
                ON CONFLICT (code) DO NOTHING
             RETURNING id, partner_id, points
            ), history AS (
                INSERT INTO loyalty_history (card_id, description, issued, used,
                                             create_uid, create_date, write_uid, write_date)
                SELECT id, %(description)s, points, 0,
                       %(uid)s, now() at time zone 'UTC', %(uid)s, now() at time zone 'UTC'
                  FROM cards
            )
            UPDATE ecrm_campaign_prep t SET coupon_id = cards.id
              FROM cards WHERE t.partner_id = cards.partner_id
            """,
            points=json.dumps(points),
            uid=self.env.uid,
            description=self.env._("Campaign: %s", self.name),
        )

    def _insert_recipients(self):
        """The prepared targets become the campaign's recipients, in one INSERT."""
        self.ensure_one()
        Recipient = self.env["ecrm.campaign.recipient"]
        Recipient.flush_model()
        self.env.cr.execute(
            SQL("DELETE FROM ecrm_campaign_recipient WHERE campaign_id = %s", self.id)
        )
        self.env.cr.execute(
            SQL(
                """
                INSERT INTO ecrm_campaign_recipient (
                    campaign_id, partner_id, contact_id, company_id, stratum_id, "group", state,
                    skip_reason, channel_id, coupon_id,
                    create_uid, create_date, write_uid, write_date)
                SELECT %(campaign)s, partner_id, contact_id, %(company)s, stratum_id, "group",
                       state, skip_reason, channel_id, coupon_id,
                       %(uid)s, now() at time zone 'UTC', %(uid)s, now() at time zone 'UTC'
                  FROM ecrm_campaign_prep
                """,
                campaign=self.id,
                company=self.company_id.id,
                uid=self.env.uid,
            )
        )
        self.env.cr.execute(SQL("DROP TABLE ecrm_campaign_prep"))
        Recipient.invalidate_model()

    def _log_skips(self):
        """Every skip, with its reason, is an interaction of the campaign."""
        self.ensure_one()
        self._log_recipients(SQL("r.state = 'skipped'"), outcome="skipped")

    def _log_recipients(self, where, outcome):
        """One campaign interaction per recipient r of the campaign matching the SQL
        condition ``where``, in one INSERT ... SELECT (no self-join of the recipients, whose
        statistics are stale right after the preparation)."""
        # A skip before any channel was chosen is logged on the campaign's first channel.
        first = self.channel_line_ids.sorted("sequence")[:1].channel_id
        first = first or self.env["ecrm.channel"]._get_by_code("email")
        self.env["ecrm.campaign.recipient"].flush_model()
        self.env["res.partner"].flush_model(["commercial_partner_id"])
        reasons = dict(self.env["ecrm.campaign.recipient"]._fields["skip_reason"].selection)
        self.env.cr.execute(
            SQL(
                """
                INSERT INTO ecrm_interaction (
                    partner_id, commercial_partner_id, channel_id, direction, date, subject,
                    outcome, user_id, company_id, capture_mode, campaign_id, res_model, res_id,
                    create_uid, create_date, write_uid, write_date)
                SELECT COALESCE(r.contact_id, r.partner_id), p.commercial_partner_id,
                       COALESCE(r.channel_id, %(first)s),
                       'outbound', now() at time zone 'UTC',
                       %(name)s || CASE WHEN r.skip_reason IS NULL THEN ''
                                        ELSE ': ' || (%(reasons)s::jsonb ->> r.skip_reason) END,
                       %(outcome)s, %(uid)s, r.company_id, 'campaign', %(utm)s,
                       'ecrm.campaign.recipient', r.id,
                       %(uid)s, now() at time zone 'UTC', %(uid)s, now() at time zone 'UTC'
                  FROM ecrm_campaign_recipient r
                  JOIN res_partner p ON p.id = r.partner_id
                 WHERE r.campaign_id = %(campaign)s AND %(where)s
                """,
                first=first.id,
                name=self.name,
                reasons=json.dumps(reasons),
                outcome=outcome,
                uid=self.env.uid,
                utm=self.utm_campaign_id.id,
                campaign=self.id,
                where=where,
            )
        )
        self.env["ecrm.interaction"].invalidate_model()

    # ------------------------------------------------------------
    # Sending
    # ------------------------------------------------------------

    def action_send(self):
        """Send the planned touches. Idempotent: only 'planned' recipients are handled, each
        once; consent is checked again now and an opt-out since the preparation wins."""
        for campaign in self:
            if campaign.state not in ("prepared", "sent"):
                raise UserError(self.env._("Prepare the campaign before sending it."))
            campaign._recheck_consent()
            campaign._recheck_pressure()
            campaign._send_mailings()
            campaign._send_calls()
            campaign._send_letters()
            # Emails and SMS are logged from their mailing traces (with opens, clicks...).
            offline = self.env["ecrm.channel"].search([("code", "in", ("phone", "letter"))])
            campaign._log_recipients(
                SQL("r.state = 'planned' AND r.channel_id = ANY(%s)", offline.ids),
                outcome="sent",
            )
            campaign._mark_sent()
            campaign.state = "sent"
        self.invalidate_recordset()  # the counts, from recipients written in SQL
        return True

    def _mark_sent(self):
        """Every planned recipient is now sent, in one UPDATE; the holdout still in the
        comparison gets the same moment, where both groups' attribution windows start."""
        self.env["ecrm.campaign.recipient"].flush_model()
        self.env.cr.execute(
            SQL(
                """
                UPDATE ecrm_campaign_recipient
                   SET state = CASE WHEN state = 'planned' THEN 'sent' ELSE state END,
                       delivery = CASE WHEN state = 'planned' THEN 'pending' END,
                       sent_at = %(now)s,
                       write_uid = %(uid)s, write_date = now() at time zone 'UTC'
                 WHERE campaign_id = %(campaign)s AND state IN ('planned', 'holdout')
                   AND sent_at IS NULL
                """,
                now=fields.Datetime.now(),
                uid=self.env.uid,
                campaign=self.id,
            )
        )
        self.env["ecrm.campaign.recipient"].invalidate_model()

    def _recheck_pressure(self):
        """The pressure cap again at send time, for the contacted group and the holdout
        alike (a capped holdout customer leaves the comparison as a contacted one does)."""
        self.ensure_one()
        if not self.company_id.ecrm_pressure_max_touches:
            return
        self.env["ecrm.campaign.recipient"].flush_model()
        self.env.cr.execute(
            self._contact_pressure_sql("ecrm_campaign_recipient", ["planned", "holdout"])
        )
        self.env["ecrm.campaign.recipient"].invalidate_model()

    def _recheck_consent(self):
        """An opt-out (or any other refusal) since the preparation wins: one UPDATE per
        channel skips the refused recipients with their reason, and the skips of the
        contacted group are logged. The holdout goes through the same check without
        being contacted: a holdout customer refused now leaves the comparison."""
        Recipient = self.env["ecrm.campaign.recipient"]
        Recipient.flush_model()
        refused_ids = []
        for channel in self.channel_line_ids.channel_id:
            from_clause, reason, _allowed = self.env["ecrm.consent"]._contact_sql(
                channel, company=self.company_id
            )
            check = SQL(
                "(SELECT %s FROM %s WHERE p.id = COALESCE(r.contact_id, r.partner_id))",
                reason,
                from_clause,
            )
            rows = self.env.execute_query(
                SQL(
                    """
                    UPDATE ecrm_campaign_recipient r
                       SET state = 'skipped', skip_reason = %(check)s,
                           write_uid = %(uid)s, write_date = now() at time zone 'UTC'
                     WHERE r.campaign_id = %(campaign)s AND r.state IN ('planned', 'holdout')
                       AND r.channel_id = %(channel)s AND %(check)s IS NOT NULL
                 RETURNING r.id, r."group"
                    """,
                    check=check,
                    uid=self.env.uid,
                    campaign=self.id,
                    channel=channel.id,
                )
            )
            refused_ids += [row[0] for row in rows if row[1] == "target"]
        Recipient.invalidate_model()
        if refused_ids:
            self._log_recipients(SQL("r.id = ANY(%s)", refused_ids), outcome="skipped")

    def _skip_at_delivery(self, refused, channel):
        """The mailing queue found these customers refused on ``channel`` ({partner id:
        reason}) when it came to them: their recipients are skipped with the reason, and
        the skip is logged, instead of staying "sent" and counting as contacted."""
        self.ensure_one()
        Recipient = self.env["ecrm.campaign.recipient"]
        Recipient.flush_model()
        rows = self.env.execute_query(
            SQL(
                """
                UPDATE ecrm_campaign_recipient r
                   SET state = 'skipped', skip_reason = v.reason,
                       write_uid = %(uid)s, write_date = now() at time zone 'UTC'
                  FROM unnest(%(partners)s::int[], %(reasons)s::varchar[]) AS v(partner_id, reason)
                 WHERE r.campaign_id = %(campaign)s
                   AND r.contact_id = v.partner_id
                   AND r.channel_id = %(channel)s AND r."group" = 'target'
                   AND r.state IN ('planned', 'sent')
             RETURNING r.id
                """,
                uid=self.env.uid,
                partners=list(refused),
                reasons=list(refused.values()),
                campaign=self.id,
                channel=channel.id,
            )
        )
        Recipient.invalidate_model()
        if rows:
            self._log_recipients(SQL("r.id = ANY(%s)", [row[0] for row in rows]), "skipped")

    def _send_mailings(self):
        for code, mailing_type in (("email", "mail"), ("sms", "sms")):
            channel = self.env["ecrm.channel"]._get_by_code(code)
            if not channel or not self.env["ecrm.campaign.recipient"].search_count(
                [
                    ("campaign_id", "=", self.id),
                    ("state", "=", "planned"),
                    ("channel_id", "=", channel.id),
                ],
                limit=1,
            ):
                continue
            # sudo: the campaign's own mailings, whatever the user's Email Marketing rights
            if self.sudo().mailing_ids.filtered(
                lambda m, mailing_type=mailing_type: m.mailing_type == mailing_type
            ):
                continue  # already created by an earlier, interrupted send
            vals = {
                "name": f"{self.name} ({channel.name})",
                "mailing_type": mailing_type,
                "mailing_model_id": self.env["ir.model"]._get_id("res.partner"),
                "campaign_id": self.utm_campaign_id.id,
                "ecrm_campaign_id": self.id,
                "medium_id": channel.medium_id.id,
                "subject": self.email_subject or self.name,
            }
            if mailing_type == "mail":
                body = self._get_email_body()
                vals["body_html"] = body
                vals["body_arch"] = body
            else:
                vals["body_plaintext"] = self.sms_body or self.name
            # sudo: campaign users send without Email Marketing rights; the content was
            # checked when written (_check_email_placeholders), as a mailing checks its own
            mailing = (
                self.env["mailing.mailing"]
                .sudo()
                .create(dict(vals, user_id=self.user_id.id or self.env.uid))
            )
            mailing.action_put_in_queue()

    def _get_email_body(self):
        """The campaign's email as the queue renders it for each customer: the body the
        marketer wrote and a footer with the preference centre and Odoo's unsubscribe link (replaced
        per recipient by Email Marketing, which also adds the one-click List-Unsubscribe
        headers of RFC 8058)."""
        self.ensure_one()
        footer = Markup(
            '<div class="o_ecrm_footer" style="margin-top:24px;font-size:12px;color:#888888;">'
            "%(why)s "
            '<a href="%(marker)s">%(prefs)s</a> &#183; '
            '<a href="/unsubscribe_from_list">%(unsubscribe)s</a></div>'
        ) % {
            "why": self.env._("You receive this email as a customer of %s.", self.company_id.name),
            "marker": PREFERENCE_LINK_MARKER,
            "prefs": self.env._("Choose what you receive"),
            "unsubscribe": self.env._("Unsubscribe"),
        }
        body = self.email_body or Markup()
        if "ecrm_campaign_id" in body:
            # Templates written for the coupon method name the campaign (a variable is
            # no placeholder: such bodies need the Mail Template Editor right).
            body = Markup('<t t-set="ecrm_campaign_id" t-value="%s"/>') % self.id + body
        return body + footer

    def _render_email(self, partner):
        """(subject, body) of the campaign's email for ``partner``, as the queue renders
        them (same placeholders, same context)."""
        self.ensure_one()
        Render = self.env["mail.render.mixin"].with_context(ecrm_campaign_id=self.id)
        subject = Render._render_template(
            self.email_subject or self.name, "res.partner", partner.ids, engine="inline_template"
        )[partner.id]
        body = Render._render_template(
            self._get_email_body(),
            "res.partner",
            partner.ids,
            engine="qweb",
            options={"post_process": True},
        )[partner.id]
        return subject, self._set_preference_link(body, partner)

    def _set_preference_link(self, body, partner):
        """``body`` of this campaign's email with the footer's marker replaced by the
        preference centre link of ``partner``, signed for the campaign's company."""
        self.ensure_one()
        marker = self.get_base_url() + PREFERENCE_LINK_MARKER
        if not body or marker not in body:
            return body
        # sudo: the campaign's company, to sign the recipient's own link
        return body.replace(marker, partner._ecrm_preference_url(self.sudo().company_id))

    def action_preview_email(self):
        """Preview the email of a recipient, and send a test of it."""
        self.ensure_one()
        return {
            "type": "ir.actions.act_window",
            "name": self.env._("Preview the Email"),
            "res_model": "ecrm.campaign.email.preview",
            "view_mode": "form",
            "target": "new",
            "context": {"default_campaign_id": self.id},
        }

    def _send_calls(self):
        phone = self.env["ecrm.channel"]._get_by_code("phone")
        recipients = self.env["ecrm.campaign.recipient"].search(
            [
                ("campaign_id", "=", self.id),
                ("state", "=", "planned"),
                ("channel_id", "=", phone.id),
            ]
        )
        if not recipients:
            return
        activity_type = self.env.ref("mail.mail_activity_data_call")
        model_id = self.env["ir.model"]._get_id("res.partner")
        activities = self.env["mail.activity"].create(
            [
                {
                    "activity_type_id": activity_type.id,
                    "res_model_id": model_id,
                    "res_id": (recipient.contact_id or recipient.partner_id).id,
                    "summary": self.name,
                    "note": self.call_script,
                    "user_id": (recipient.partner_id.user_id or self.user_id).id,
                    "date_deadline": fields.Date.context_today(self),
                }
                for recipient in recipients
            ]
        )
        self.env.cr.execute(
            SQL(
                """
                UPDATE ecrm_campaign_recipient r
                   SET activity_id = v.activity_id,
                       write_uid = %s, write_date = now() at time zone 'UTC'
                  FROM unnest(%s::int[], %s::int[]) AS v(id, activity_id)
                 WHERE r.id = v.id
                """,
                self.env.uid,
                recipients.ids,
                activities.ids,
            )
        )
        recipients.invalidate_recordset(["activity_id", "write_uid", "write_date"])

    def _send_letters(self):
        """Letters are printed from the campaign (Print > Letters)."""
        return True

    def action_print_letters(self):
        """Print the letters; the letters of the sent campaign count as delivered."""
        self.ensure_one()
        letter = self.env["ecrm.channel"]._get_by_code("letter")
        if letter and self.state in ("sent", "done"):
            self.env["ecrm.campaign.recipient"]._set_delivery(
                "printed", SQL("r.campaign_id = %s AND r.channel_id = %s", self.id, letter.id)
            )
            self.invalidate_recordset()
        return self.env.ref("ecrm_addon.action_report_ecrm_campaign_letters").report_action(self)

    # ------------------------------------------------------------
    # Measuring
    # ------------------------------------------------------------

    def action_compute_results(self):
        """Conversions and revenue within the attribution window, set-based."""
        for campaign in self:
            campaign._compute_conversions()
        return True

    def _compute_conversions(self):
        """Conversions and revenue of the two groups compared, within the attribution
        window, set-based.

        Both groups' windows start at the same moment, when the campaign was sent (the
        contacted group got its touch, the holdout was confirmed then). An order of the
        customer or of any of its contact persons counts, and each order is attributed
        at most once, to the one recipient of its customer.
        """
        self.ensure_one()
        self.env.flush_all()
        goal_filter = {
            "order": SQL("TRUE"),
            "repeat": SQL(
                "EXISTS (SELECT 1 FROM sale_order b JOIN res_partner bp ON bp.id = b.partner_id "
                "WHERE bp.commercial_partner_id = p.commercial_partner_id "
                "AND b.company_id = o.company_id AND b.state = 'sale' AND b.date_order < t.since)"
            ),
            "reactivation": SQL(
                "NOT EXISTS (SELECT 1 FROM sale_order b JOIN res_partner bp "
                "ON bp.id = b.partner_id WHERE bp.commercial_partner_id = p.commercial_partner_id "
                "AND b.company_id = o.company_id AND b.state = 'sale' "
                "AND b.date_order BETWEEN t.since - interval '180 days' AND t.since)"
            ),
        }[self.goal]
        self.env.cr.execute(
            SQL(
                """
                WITH touched AS (
                    SELECT r.id, r.partner_id, r.sent_at AS since
                      FROM ecrm_campaign_recipient r
                     WHERE r.campaign_id = %(campaign)s AND r.sent_at IS NOT NULL
                       AND ((r."group" = 'target' AND r.state = 'sent')
                            OR (r."group" = 'holdout' AND r.state = 'holdout'))
                ), attributed AS (
                    SELECT DISTINCT ON (o.id) t.id, o.id AS order_id,
                           o.amount_untaxed / COALESCE(NULLIF(o.currency_rate, 0), 1) AS amount
                      FROM touched t
                      JOIN res_partner p ON p.id = t.partner_id
                      JOIN res_partner op ON op.commercial_partner_id = p.commercial_partner_id
                      JOIN sale_order o ON o.partner_id = op.id
                     WHERE o.company_id = %(company)s AND o.state = 'sale'
                       AND o.date_order >= t.since
                       AND o.date_order < t.since + make_interval(days => %(days)s)
                       AND %(goal)s
                  ORDER BY o.id, t.id
                ), conversions AS (
                    SELECT id, min(order_id) AS order_id, sum(amount) AS revenue
                      FROM attributed
                  GROUP BY id
                )
                UPDATE ecrm_campaign_recipient r
                   SET converted = c.id IS NOT NULL,
                       order_id = c.order_id,
                       revenue = COALESCE(c.revenue, 0)
                  FROM ecrm_campaign_recipient a LEFT JOIN conversions c ON c.id = a.id
                 WHERE r.id = a.id AND a.campaign_id = %(campaign)s
                """,
                campaign=self.id,
                company=self.company_id.id,
                days=self.attribution_days,
                goal=goal_filter,
            )
        )
        self.env["ecrm.campaign.recipient"].invalidate_model()
        self.invalidate_recordset()

    def action_view_recipients(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id(
            "ecrm_addon.ecrm_campaign_recipient_action"
        )
        action["domain"] = [("campaign_id", "=", self.id)]
        return action
