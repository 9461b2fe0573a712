import binascii
import json
import logging
from datetime import timedelta

from werkzeug.exceptions import BadRequest

from odoo import fields, http, tools
from odoo.http import request

_logger = logging.getLogger(__name__)

PAUSE_DAYS = (30, 90)


class EcrmConsentController(http.Controller):
    """The customer's preference centre, double opt-in and one-click unsubscribe.

    Links carry a token signed with Odoo's HMAC tools (partner and company ids, never an
    address) and checked in constant time. A GET never changes anything: mail scanners
    follow links; changes are POSTs.
    """

    # ------------------------------------------------------------
    # Tokens
    # ------------------------------------------------------------

    def _read_token(self, token, scope):
        """(partner, company, values) of a valid token, or None."""
        try:
            # sudo: tokens are signed with the database secret
            values = tools.verify_hash_signed(request.env(su=True), scope, token)
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, json.JSONDecodeError):
            return None
        if not isinstance(values, dict):
            return None
        partner_id, company_id = values.get("p"), values.get("c")
        if not isinstance(partner_id, int) or not isinstance(company_id, int):
            return None
        # sudo: the customer is not logged in; the signed token names them
        partner = request.env["res.partner"].sudo().browse(partner_id).exists()
        company = request.env["res.company"].sudo().browse(company_id).exists()
        if not partner or not company:
            return None
        return partner, company, values

    def _invalid(self, status=403):
        return request.render("ecrm_addon.ecrm_consent_invalid_page", {}, status=status)

    def _channels(self, company):
        # sudo: public page, channels are configuration
        return (
            request.env["ecrm.channel"]
            .sudo()
            .search(["|", ("company_id", "=", False), ("company_id", "=", company.id)])
        )

    def _record(self, partner, company, changes, source, pause_until=None):
        """Append consent events for ``changes`` ({channel: state})."""
        marketing = request.env.ref("ecrm_addon.ecrm_consent_purpose_marketing")
        version = (
            request.env["ir.config_parameter"]
            .sudo()
            .get_param("ecrm_addon.consent_text_version", "1")
        )
        # sudo: the customer records their own choice through a signed link
        request.env["ecrm.consent.event"].sudo().create(
            [
                {
                    "partner_id": partner.id,
                    "company_id": company.id,
                    "channel_id": channel.id,
                    "purpose_id": marketing.id,
                    "state": state,
                    "pause_until": pause_until if state == "pause" else False,
                    "source": source,
                    "ip_address": request.httprequest.remote_addr,
                    "address": partner.email_normalized
                    if channel.code == "email"
                    else partner.phone_sanitized,
                    "consent_text_version": version,
                    "legal_basis": "consent",
                    "user_id": False,
                }
                for channel, state in changes.items()
            ]
        )

    # ------------------------------------------------------------
    # Preference centre
    # ------------------------------------------------------------

    @http.route(
        "/ecrm/preferences/<string:token>",
        type="http",
        auth="public",
        methods=["GET"],
        sitemap=False,
    )
    def preferences(self, token, saved=None, **kwargs):
        read = self._read_token(token, "ecrm_preferences")
        if not read:
            return self._invalid()
        partner, company, _values = read
        channels = self._channels(company)
        Consent = request.env["ecrm.consent"].sudo()  # sudo: see _read_token
        reasons = {
            channel.id: Consent.with_company(company)
            ._check_contact(partner.ids, channel, company=company)
            .get(partner.id)
            for channel in channels
        }
        consents = Consent.search(
            [("partner_id", "=", partner.id), ("company_id", "=", company.id)]
        )
        paused_until = max(consents.mapped("paused_until") or [False]) or False
        return request.render(
            "ecrm_addon.ecrm_preferences_page",
            {
                "partner": partner,
                "company": company,
                "token": token,
                "channels": channels,
                "reasons": reasons,
                "paused_until": paused_until
                if paused_until and paused_until > fields.Datetime.now()
                else False,
                "saved": bool(saved),
            },
        )

    @http.route(
        "/ecrm/preferences/<string:token>",
        type="http",
        auth="public",
        methods=["POST"],
        sitemap=False,
    )
    def preferences_save(self, token, **post):
        read = self._read_token(token, "ecrm_preferences")
        if not read:
            return self._invalid()
        partner, company, _values = read
        channels = self._channels(company)
        Consent = request.env["ecrm.consent"].sudo()  # sudo: see _read_token
        changes = {}
        for channel in channels:
            if f"channel_{channel.id}_shown" not in post:
                continue  # not on the form the customer saw
            wanted = "opt_in" if post.get(f"channel_{channel.id}") == "on" else "opt_out"
            allowed = not Consent._check_contact(partner.ids, channel, company=company).get(
                partner.id
            )
            if (wanted == "opt_in") != allowed:
                changes[channel] = wanted
        if changes:
            self._record(partner, company, changes, "preference_centre")
        pause = post.get("pause_days")
        if pause and pause.isdigit() and int(pause) in PAUSE_DAYS:
            until = fields.Datetime.now() + timedelta(days=int(pause))
            pauses = dict.fromkeys(channels, "pause")
            self._record(partner, company, pauses, "preference_centre", until)
        return request.redirect(f"/ecrm/preferences/{token}?saved=1", code=303)

    @http.route("/my/ecrm/preferences", type="http", auth="user", methods=["GET"], sitemap=False)
    def my_preferences(self, **kwargs):
        """From the portal: the logged-in customer's own preference centre."""
        partner = request.env.user.partner_id
        return request.redirect(
            f"/ecrm/preferences/{partner._ecrm_preference_token(request.env.company)}", code=303
        )

    # ------------------------------------------------------------
    # One-click unsubscribe (RFC 8058)
    # ------------------------------------------------------------

    @http.route(
        "/ecrm/unsubscribe/<string:token>",
        type="http",
        auth="public",
        methods=["POST"],
        csrf=False,
        sitemap=False,
    )
    def unsubscribe_one_click(self, token, **post):
        read = self._read_token(token, "ecrm_preferences")
        if not read:
            return request.make_response(
                "Invalid or expired link.", status=403, headers=[("Content-Type", "text/plain")]
            )
        if post.get("List-Unsubscribe") != "One-Click":
            raise BadRequest("Expected List-Unsubscribe=One-Click")
        partner, company, _values = read
        email = request.env["ecrm.channel"].sudo()._get_by_code("email")
        self._record(partner, company, {email: "opt_out"}, "unsubscribe")
        return request.make_response(
            "You are unsubscribed.", headers=[("Content-Type", "text/plain")]
        )

    @http.route(
        "/ecrm/unsubscribe/<string:token>",
        type="http",
        auth="public",
        methods=["GET"],
        sitemap=False,
    )
    def unsubscribe_page(self, token, **kwargs):
        """A scanner following the link changes nothing: show the preference centre."""
        return request.redirect(f"/ecrm/preferences/{token}", code=303)

    # ------------------------------------------------------------
    # Double opt-in
    # ------------------------------------------------------------

    @http.route(
        "/ecrm/consent/confirm/<string:token>",
        type="http",
        auth="public",
        methods=["GET"],
        sitemap=False,
    )
    def double_opt_in_page(self, token, **kwargs):
        read = self._read_token(token, "ecrm_double_opt_in")
        if not read:
            return self._invalid()
        partner, company, _values = read
        return request.render(
            "ecrm_addon.ecrm_double_opt_in_page",
            {"partner": partner, "company": company, "token": token, "confirmed": False},
        )

    @http.route(
        "/ecrm/consent/confirm/<string:token>",
        type="http",
        auth="public",
        methods=["POST"],
        sitemap=False,
    )
    def double_opt_in_confirm(self, token, **post):
        read = self._read_token(token, "ecrm_double_opt_in")
        if not read:
            return self._invalid()
        partner, company, values = read
        channel = request.env["ecrm.channel"].sudo().browse(values.get("ch")).exists()
        if not channel:
            return self._invalid(status=400)
        self._record(partner, company, {channel: "opt_in"}, "double_opt_in")
        return request.render(
            "ecrm_addon.ecrm_double_opt_in_page",
            {"partner": partner, "company": company, "token": token, "confirmed": True},
        )
