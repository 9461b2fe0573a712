import base64
import binascii
import hashlib
import json
import logging
from datetime import datetime, timedelta, timezone

from werkzeug.exceptions import BadRequest

from odoo import fields, http, tools
from odoo.http import request

_logger = logging.getLogger(__name__)

PAUSE_DAYS = (30, 90)
# The channels a company markets on: the ones campaigns use.
MARKETING_CODES = ("email", "sms", "phone", "letter")
# A new preference link is mailed at most once in this time per address.
NEW_LINK_MINUTES = 10
# Validity of a double opt-in link (res.partner.action_ecrm_request_double_opt_in).
DOUBLE_OPT_IN_HOURS = 72
# The outside key of a double opt-in confirmation: the link's hash, so a link counts once.
DOUBLE_OPT_IN_SYSTEM = "ecrm_double_opt_in"


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
        # a customer of one company has consent in that company only (check_company on
        # the events): a link naming another one still records, never loses, the choice
        return partner, partner.company_id or company, values

    def _invalid(self, status=403):
        return request.render(
            "ecrm_addon.ecrm_consent_invalid_page", {"new_link": True}, status=status
        )

    def _channels(self, company):
        """The channels the company markets on."""
        # sudo: public page, channels are configuration
        return (
            request.env["ecrm.channel"]
            .sudo()
            .search(
                [
                    ("code", "in", MARKETING_CODES),
                    "|",
                    ("company_id", "=", False),
                    ("company_id", "=", company.id),
                ]
            )
        )

    def _shown_channels(self, partner, company):
        """(channels, reasons): those the company markets on for which the customer has
        an address, and why each may not be used now."""
        channels = self._channels(company)
        reasons = self._reasons(partner, company, channels)
        shown = channels.filtered(lambda channel: reasons[channel.id] != "no_address")
        return shown, reasons

    def _record(self, partner, company, changes, source, pause_until=None):
        """Append consent events for ``changes`` ({channel: state})."""
        request.env["ecrm.consent.event"]._create_trusted(
            [
                self._event_vals(partner, company, channel, state, source, pause_until)
                for channel, state in changes.items()
            ]
        )

    def _event_vals(self, partner, company, channel, state, source, pause_until=None):
        marketing = request.env.ref("ecrm_addon.ecrm_consent_purpose_marketing")
        version = (
            request.env["ir.config_parameter"]
            .sudo()
            .get_param("ecrm_addon.consent_text_version", "1")
        )
        return {
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

    @staticmethod
    def _subscribed(reason):
        """Is the channel's switch on for this contact reason? (as the page shows it)"""
        return not reason or reason == "paused"

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
        return self._render_preferences(partner, company, token, saved=bool(saved))

    def _paused_consents(self, partner, company, channels):
        # sudo: see _read_token
        return (
            request.env["ecrm.consent"]
            .sudo()
            .search(
                [
                    ("partner_id", "=", partner.id),
                    ("company_id", "=", company.id),
                    ("channel_id", "in", channels.ids),
                    ("paused_until", ">", fields.Datetime.now()),
                ]
            )
        )

    def _reasons(self, partner, company, channels):
        """{channel id: why the customer may not be contacted, or False}"""
        Consent = request.env["ecrm.consent"].sudo()  # sudo: see _read_token
        return {
            channel.id: Consent.with_company(company)
            ._check_contact(partner.ids, channel, company=company)
            .get(partner.id)
            for channel in channels
        }

    def _render_preferences(self, partner, company, token, saved=False, error=None, status=200):
        channels, reasons = self._shown_channels(partner, company)
        paused = self._paused_consents(partner, company, channels)
        paused_until = max(paused.mapped("paused_until") or [False]) or False
        return request.render(
            "ecrm_addon.ecrm_preferences_page",
            {
                "partner": partner,
                "company": company,
                "token": token,
                "channels": channels,
                "reasons": reasons,
                "paused_until": paused_until,
                "saved": saved,
                "error": error,
            },
            status=status,
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
        pause = post.get("pause_days") or ""
        if pause not in {"", *map(str, PAUSE_DAYS)}:
            # exact strings only: int() of "²" or of 5,000 digits fails or costs
            error = request.env._(
                "Choose a pause of %(days)s days, or no pause.",
                days=request.env._(" or ").join(map(str, PAUSE_DAYS)),
            )
            return self._render_preferences(partner, company, token, error=error, status=400)
        channels, reasons = self._shown_channels(partner, company)
        if post.get("resume"):
            # The pause ends now: a pause event until now on each paused channel.
            paused = self._paused_consents(partner, company, channels).channel_id
            if paused:
                now = fields.Datetime.now()
                self._record(
                    partner, company, dict.fromkeys(paused, "pause"), "preference_centre", now
                )
            return request.redirect(f"/ecrm/preferences/{token}?saved=1", code=303)
        changes = {}
        if post.get("unsubscribe_all"):
            # An explicit refusal on every channel not refused yet (also those not used
            # now for want of consent: it outlives a change of the company's policy).
            changes = {
                channel: "opt_out" for channel in channels if reasons[channel.id] != "opted_out"
            }
            channels = channels.browse()
        for channel in channels:
            if f"channel_{channel.id}_shown" not in post:
                continue  # not on the form the customer saw
            wanted = post.get(f"channel_{channel.id}") == "on"
            # only what the customer changed: the switch as the page showed it (on while
            # paused) against what they sent
            if wanted != self._subscribed(reasons[channel.id]):
                changes[channel] = "opt_in" if wanted else "opt_out"
        if changes:
            self._record(partner, company, changes, "preference_centre")
        if pause:
            until = fields.Datetime.now() + timedelta(days=int(pause))
            pauses = dict.fromkeys(channels, "pause")
            self._record(partner, company, pauses, "preference_centre", until)
        return request.redirect(f"/ecrm/preferences/{token}?saved=1", code=303)

    @http.route(
        "/ecrm/preferences/new_link",
        type="http",
        auth="public",
        methods=["POST"],
        sitemap=False,
    )
    def preferences_new_link(self, email="", **post):
        """Mail a new preference link to a known address. The answer is the same whether
        the address is known or not (no list of customers to probe), and an address gets
        at most one link every few minutes."""
        address = tools.email_normalize(email or "")
        if address:
            # sudo: the visitor is anonymous; the link goes to the address's own mailbox
            partner = (
                request.env["res.partner"]
                .sudo()
                .search([("email_normalized", "=", address)], order="id", limit=1)
            )
            recent = (
                request.env["mail.mail"]
                .sudo()
                .search_count(
                    [
                        ("email_to", "=", address),
                        ("model", "=", "res.partner"),
                        ("res_id", "=", partner.id),
                        ("create_date", ">", fields.Datetime.now()
                         - timedelta(minutes=NEW_LINK_MINUTES)),
                    ],
                    limit=1,
                )
            )  # fmt: skip
            if partner and not recent:
                self._send_new_link(partner, address)
        return request.render(
            "ecrm_addon.ecrm_consent_invalid_page", {"new_link": False, "sent": True}
        )

    def _send_new_link(self, partner, address):
        company = partner.company_id or request.env.company
        url = partner._ecrm_preference_url(company)
        body = request.env["ir.qweb"]._render(
            "ecrm_addon.ecrm_preferences_link_mail",
            {"partner": partner, "company": company, "url": url},
        )
        # sudo: a public request mails the address's owner their own link
        request.env["mail.mail"].sudo().create(
            {
                "subject": request.env._("Your communication preferences at %s", company.name),
                "body_html": body,
                "email_to": address,
                "email_from": company.email_formatted or company.partner_id.email_formatted,
                "model": "res.partner",
                "res_id": partner.id,
                "auto_delete": False,
            }
        ).send()

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
        """Confirm once; a link sent before an opt-out never subscribes again."""
        read = self._read_token(token, "ecrm_double_opt_in")
        if not read:
            return self._invalid()
        partner, company, values = read
        channel = request.env["ecrm.channel"].sudo().browse(values.get("ch")).exists()
        if not channel:
            return self._invalid(status=400)
        vals = self._event_vals(partner, company, channel, "opt_in", "double_opt_in")
        # sudo: see _read_token; the customer's own history of this channel
        opted_out_since = (
            request.env["ecrm.consent.event"]
            .sudo()
            .search_count(
                [
                    ("partner_id", "=", partner.id),
                    ("company_id", "=", company.id),
                    ("channel_id", "=", channel.id),
                    ("purpose_id", "=", vals["purpose_id"]),
                    ("state", "=", "opt_out"),
                    ("date", ">=", self._issued_at(token, DOUBLE_OPT_IN_HOURS)),
                ],
                limit=1,
            )
        )
        if opted_out_since:
            return self._invalid(status=410)
        vals.update(
            source_system=DOUBLE_OPT_IN_SYSTEM,
            external_ref=hashlib.sha256(token.encode()).hexdigest(),
        )
        # sudo: trusted path, a signed link; a link already confirmed records nothing more
        request.env["ecrm.consent.event"].sudo()._insert_keyed([vals])
        return request.render(
            "ecrm_addon.ecrm_double_opt_in_page",
            {"partner": partner, "company": company, "token": token, "confirmed": True},
        )

    @staticmethod
    def _issued_at(token, hours):
        """When a verified link valid ``hours`` was signed: its expiration minus that."""
        raw = base64.urlsafe_b64decode(token.encode() + b"===")
        expiration = int.from_bytes(raw[1:9], "little")  # tools.hash_sign's layout
        if not expiration:
            return datetime(1970, 1, 1)
        moment = datetime.fromtimestamp(expiration, timezone.utc).replace(tzinfo=None)
        return moment - timedelta(hours=hours)
