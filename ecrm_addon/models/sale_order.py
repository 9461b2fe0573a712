from odoo import fields, models


class SaleOrder(models.Model):
    _inherit = "sale.order"

    ecrm_interaction_count = fields.Integer(
        string="Interactions",
        compute="_compute_ecrm_interaction_count",
        groups="ecrm_addon.group_ecrm_user",
    )

    # The customer at a glance on the order, in the current company (see res.partner)
    ecrm_partner_segment_id = fields.Many2one(
        related="partner_id.ecrm_segment_id", groups="ecrm_addon.group_ecrm_user"
    )
    ecrm_partner_tier_id = fields.Many2one(
        related="partner_id.ecrm_tier_id", groups="ecrm_addon.group_ecrm_user"
    )
    ecrm_partner_churn_risk = fields.Float(
        related="partner_id.ecrm_churn_risk", groups="ecrm_addon.group_ecrm_user"
    )
    ecrm_partner_clv = fields.Float(
        related="partner_id.ecrm_clv", groups="ecrm_addon.group_ecrm_user"
    )
    ecrm_partner_score_currency_id = fields.Many2one(
        related="partner_id.ecrm_score_currency_id", groups="ecrm_addon.group_ecrm_user"
    )

    def _compute_ecrm_interaction_count(self):
        counts = dict(
            self.env["ecrm.interaction"]._read_group(
                [("sale_order_id", "in", self.ids)], ["sale_order_id"], ["__count"]
            )
        )
        for order in self:
            order.ecrm_interaction_count = counts.get(order, 0)

    def _action_confirm(self):
        result = super()._action_confirm()
        self.env["ecrm.interaction"]._capture_later(self, "_ecrm_capture_confirmation")
        return result

    def _action_cancel(self):
        # Cancelled orders stop counting: incremental scoring runs find new and confirmed
        # orders by their indexed dates, and cancellations by this request.
        counted = self.filtered(lambda order: order.state not in ("draft", "sent", "cancel"))
        pairs = {
            (order.partner_id.commercial_partner_id.id, order.company_id.id) for order in counted
        }
        result = super()._action_cancel()
        # (in SQL: recorded whatever the canceller's rights on scores)
        self.env["ecrm.customer.score"]._request_rescore(pairs)
        return result

    def _ecrm_capture_confirmation(self):
        """Log each confirmed order as an inbound interaction, one batch for all orders
        (all those confirmed in the transaction: see ``ecrm.interaction._capture_later``)."""
        orders = self.filtered(lambda order: order.company_id.ecrm_capture_order)
        if not orders:
            return
        channels = self._ecrm_get_confirmation_channels()
        self.env["ecrm.interaction"]._capture(
            [
                {
                    "partner_id": order.partner_id.id,
                    "channel_id": channels[order].id,
                    "direction": "inbound",
                    "date": order.date_order,
                    "subject": self.env._("Order %s confirmed", order.name),
                    "outcome": "ordered",
                    "user_id": order.user_id.id,
                    "team_id": order.team_id.id,
                    "company_id": order.company_id.id,
                    "sale_order_id": order.id,
                    "res_model": order._name,
                    "res_id": order.id,
                    "campaign_id": order.campaign_id.id,
                    "source_id": order.source_id.id,
                    "medium_id": order.medium_id.id,
                }
                for order in orders
                if channels[order]
            ]
        )

    def _ecrm_get_confirmation_channels(self):
        """The channel of each order: its UTM medium's, web when the customer confirmed it
        online, its team's, or the company's default; phone as the last resort."""
        Channel = self.env["ecrm.channel"].sudo()  # sudo: channels are configuration
        by_medium = {
            channel.medium_id: channel
            for channel in Channel.search([("medium_id", "in", self.medium_id.ids)])
        }
        web = Channel._get_by_code("web")
        fallback = Channel._get_by_code("phone")
        online = self.env.user._is_public() or self.env.user.share
        return {
            order: by_medium.get(order.medium_id)
            or (online and web)
            or order.team_id.ecrm_channel_id
            or order.company_id.ecrm_order_channel_id
            or fallback
            for order in self
        }

    def action_ecrm_view_interactions(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id("ecrm_addon.ecrm_interaction_action")
        action["domain"] = [("sale_order_id", "=", self.id)]
        action["context"] = {
            "default_partner_id": self.partner_id.id,
            "default_sale_order_id": self.id,
        }
        return action

    def action_ecrm_log_interaction(self):
        self.ensure_one()
        return self.env["ecrm.interaction"]._action_log_interaction(
            partner=self.partner_id, res_model=self._name, res_id=self.id, order=self
        )
