import re
from datetime import timedelta

import lxml.html
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from odoo import fields, tools
from odoo.exceptions import AccessError, UserError, ValidationError
from odoo.tests import HttpCase, tagged, users

from odoo.addons.mail.tests.common import MockEmail

from .common import EcrmCommon


class EcrmConsentCommon(EcrmCommon):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.Event = cls.env["ecrm.consent.event"]
        cls.Consent = cls.env["ecrm.consent"]
        cls.email = cls.env.ref("ecrm_addon.ecrm_channel_email")
        cls.sms = cls.env.ref("ecrm_addon.ecrm_channel_sms")
        cls.phone = cls.env.ref("ecrm_addon.ecrm_channel_phone")
        cls.letter = cls.env.ref("ecrm_addon.ecrm_channel_letter")
        cls.marketing = cls.env.ref("ecrm_addon.ecrm_consent_purpose_marketing")
        cls.surveys = cls.env.ref("ecrm_addon.ecrm_consent_purpose_surveys")
        cls.customer.write({"phone": "+32 470 12 34 56", "street": "Rue Haute 1"})
        cls.company_a.ecrm_consent_default_policy = "opt_out"

    def _event(self, state, channel=None, partner=None, company=None, **vals):
        return self.Event.create(
            {
                "partner_id": (partner or self.customer).id,
                "company_id": (company or self.company_a).id,
                "channel_id": (channel or self.email).id,
                "state": state,
                **vals,
            }
        )

    def _reason(self, channel=None, partner=None, **kwargs):
        partner = partner or self.customer
        return self.Consent._check_contact(partner.ids, channel or self.email, **kwargs)[partner.id]


@tagged("post_install", "-at_install", "ecrm")
class TestEcrmConsent(EcrmConsentCommon):
    def test_history_is_append_only(self):
        event = self._event("opt_in")
        with self.assertRaises(UserError):
            event.write({"state": "opt_out"})
        with self.assertRaises(UserError):
            event.unlink()
        with self.assertRaises(UserError):
            event.with_user(self.user_manager).unlink()
        with self.assertRaises(AccessError):
            event.with_user(self.user_salesman).with_context(ecrm_consent_retention=True).unlink()
        with self.assertRaises(UserError):
            self.Event.with_user(self.user_manager)._purge_before(fields.Datetime.now())

    def test_retention_keeps_the_deciding_event(self):
        old = self._event("opt_out", date=fields.Datetime.now() - timedelta(days=900))
        newer = self._event("opt_out", date=fields.Datetime.now() - timedelta(days=800))
        purged = self.Event._purge_before(fields.Datetime.now() - timedelta(days=700))
        self.assertEqual(purged, 1)
        self.assertFalse(old.exists())
        self.assertTrue(newer.exists())
        consent = self.Consent.search([("partner_id", "=", self.customer.id)])
        self.assertEqual(consent.state, "opt_out")

    @users("ecrm_salesman")
    def test_salesman_records_consent(self):
        event = self.env["ecrm.consent.event"].create(
            {
                "partner_id": self.customer.id,
                "channel_id": self.email.id,
                "state": "opt_out",
                "note": "Asked on the phone not to get newsletters",
            }
        )
        self.assertEqual(event.user_id, self.user_salesman)
        self.assertEqual(event.source, "user")
        self.assertEqual(event.purpose_id, self.marketing)
        consent = self.Consent.search([("partner_id", "=", self.customer.id)])
        self.assertEqual(consent.state, "opt_out")
        self.assertEqual(consent.last_event_id, event)

    def test_state_follows_history_by_date(self):
        now = fields.Datetime.now()
        self._event("opt_out", date=now - timedelta(hours=1))
        self.assertEqual(self._reason(), "opted_out")
        self._event("opt_in", date=now - timedelta(days=3))  # older news arrives late
        self.assertEqual(self._reason(), "opted_out")
        self._event("opt_in", date=now)
        self.assertFalse(self._reason())
        self._event("unknown", date=now + timedelta(seconds=1))
        self.assertFalse(self._reason(), "withdrawn: back to the company's policy (opt-out)")
        # Purposes are separate.
        self._event("opt_out", purpose_id=self.surveys.id)
        self.assertFalse(self._reason())
        self.assertEqual(self._reason(purpose=self.surveys), "opted_out")

    def test_pause(self):
        self._event("opt_in")
        self._event("pause", pause_until=fields.Datetime.now() + timedelta(days=30))
        self.assertEqual(self._reason(), "paused")
        self.assertFalse(self._reason(at=fields.Datetime.now() + timedelta(days=31)))
        consent = self.Consent.search([("partner_id", "=", self.customer.id)])
        self.assertEqual(consent.state, "opt_in", "a pause keeps the consent")

    def test_policies(self):
        self.assertFalse(self._reason(self.email), "soft opt-in: allowed unless opted out")
        self.env["ecrm.consent.policy"].create(
            {"company_id": self.company_a.id, "channel_id": self.letter.id, "policy": "opt_in"}
        )
        self.assertEqual(self._reason(self.letter), "no_consent")
        self._event("opt_in", channel=self.letter)
        self.assertFalse(self._reason(self.letter))
        # The same customer in company B follows company B's policy.
        self.company_b.ecrm_consent_default_policy = "opt_in"
        self.assertEqual(self._reason(self.email, company=self.company_b), "no_consent")

    def test_no_address(self):
        nobody = self.env["res.partner"].create({"name": "No address"})
        self.assertEqual(self._reason(self.email, partner=nobody), "no_address")
        self.assertEqual(self._reason(self.sms, partner=nobody), "no_address")
        self.assertEqual(self._reason(self.letter, partner=nobody), "no_address")

    def test_opt_out_updates_odoo_blacklists(self):
        Blacklist = self.env["mail.blacklist"].with_context(active_test=False)
        self._event("opt_out")
        entry = Blacklist.search([("email", "=", "carla@example.com")])
        self.assertTrue(entry.active)
        self.assertTrue(self.customer.is_blacklisted)
        self._event("opt_in")
        self.assertFalse(entry.active)
        self._event("opt_out", channel=self.sms)
        number = self.customer.phone_sanitized
        phone_entry = self.env["phone.blacklist"].search([("number", "=", number)])
        self.assertTrue(phone_entry.active)
        # Other purposes leave the blacklists alone.
        self._event("opt_out", purpose_id=self.surveys.id)
        self.assertFalse(entry.active)

    def test_odoo_blacklist_shows_here(self):
        self.env["mail.blacklist"]._add("Carla <carla@example.com>")
        self.assertEqual(self._reason(), "opted_out")
        events = self.Event.search([("partner_id", "=", self.customer.id)])
        self.assertEqual(set(events.mapped("source")), {"blacklist"})
        self.assertIn(self.company_b, events.company_id, "the blacklist is global")
        for company in (self.company_a, self.company_b):
            consent = self.Consent.search(
                [("partner_id", "=", self.customer.id), ("company_id", "=", company.id)]
            )
            self.assertEqual(consent.state, "opt_out")
        self.env["mail.blacklist"]._remove("carla@example.com")
        self.assertFalse(self._reason())
        consent = self.Consent.search(
            [("partner_id", "=", self.customer.id), ("company_id", "=", self.company_a.id)]
        )
        self.assertEqual(consent.state, "unknown")
        self.env["phone.blacklist"]._add([self.customer.phone_sanitized])
        self.assertEqual(self._reason(self.sms), "opted_out")
        # An address blacklisted by a decision in another company only is still blocked.
        self.env["ecrm.consent"].search([("partner_id", "=", self.customer.id)]).unlink()
        self.assertEqual(self._reason(self.sms), "blacklisted")

    def test_blacklisting_always_recorded(self):
        """No context key skips the consent record of a blacklisting."""
        Blacklist = self.env["mail.blacklist"].with_context(ecrm_consent_sync=True)
        Blacklist.create({"email": "carla@example.com"})
        self.assertEqual(self._reason(), "opted_out")

    def test_partner_consent_fields_searchable(self):
        other = self.env["res.partner"].create({"name": "Other", "email": "other@example.com"})
        self._event("opt_out", partner=other)
        Partner = self.env["res.partner"].with_user(self.user_salesman)
        reachable = Partner.search(
            [("ecrm_email_contactable", "=", True), ("id", "in", (self.customer | other).ids)]
        )
        self.assertEqual(reachable, self.customer)
        self.assertTrue(self.customer.with_user(self.user_salesman).ecrm_email_contactable)
        self.assertFalse(other.with_user(self.user_salesman).ecrm_email_contactable)

    def test_company_isolation(self):
        self._event("opt_out", company=self.company_b)
        mine = [("partner_id", "=", self.customer.id)]
        self.assertFalse(self.Consent.with_user(self.user_salesman).search(mine))
        self.assertFalse(self.Event.with_user(self.user_salesman).search(mine))
        self.assertTrue(self.Event.with_user(self.user_salesman_b).search(mine))

    def test_users_cannot_forge_proof(self):
        """Finding 5: the proof fields come from the trusted paths, never from a user."""
        Event = self.Event.with_user(self.user_salesman).with_context(ecrm_consent_trusted=True)
        vals = {
            "partner_id": self.customer.id,
            "channel_id": self.email.id,
            "state": "opt_in",
            "source": "double_opt_in",
            "user_id": self.user_manager.id,
            "ip_address": "198.51.100.1",
            "source_system": "webform",
            "external_ref": "shop-42",
        }
        with self.assertRaises(ValidationError):
            Event.create(dict(vals, date="2099-01-01 00:00:00"))
        before = fields.Datetime.now()
        event = Event.create(dict(vals, date=before + timedelta(seconds=30)))
        self.assertEqual(
            (event.source, event.user_id, event.ip_address, event.source_system),
            ("user", self.user_salesman, False, False),
        )
        self.assertFalse(event.external_ref)
        self.assertLessEqual(event.date, fields.Datetime.now(), "never in the future")
        past = Event.create(dict(vals, date=before - timedelta(days=3)))
        self.assertEqual(past.date, before - timedelta(days=3), "the past is allowed")
        # The customer's one-click unsubscribe right after wins over the user's opt-in.
        self.Event._create_trusted(
            [
                {
                    "partner_id": self.customer.id,
                    "company_id": self.company_a.id,
                    "channel_id": self.email.id,
                    "state": "opt_out",
                    "source": "unsubscribe",
                }
            ]
        )
        self.assertEqual(self._reason(), "opted_out")

    def test_partner_of_another_company(self):
        """Finding 7: a user of company A cannot link a customer of company B."""
        with self.assertRaises(UserError):
            self.Event.with_user(self.user_salesman).create(
                {
                    "partner_id": self.customer_b.id,
                    "channel_id": self.email.id,
                    "state": "opt_out",
                }
            )

    def test_blacklist_decided_by_every_company(self):
        """Finding 4: an opt-in in company B never lifts company A's opt-out."""
        Blacklist = self.env["mail.blacklist"].with_context(active_test=False)
        self._event("opt_out")
        self._event("opt_in", company=self.company_b)
        self.assertTrue(Blacklist.search([("email", "=", "carla@example.com")]).active)
        self.assertTrue(self.customer.is_blacklisted)
        self.assertEqual(self._reason(), "opted_out")
        # Another customer with the same address opted out in B: still listed.
        twin = self.env["res.partner"].create({"name": "Carla twin", "email": "carla@example.com"})
        self._event("opt_out", partner=twin, company=self.company_b)
        self._event("opt_in")
        self.assertTrue(Blacklist.search([("email", "=", "carla@example.com")]).active)
        self._event("opt_in", partner=twin, company=self.company_b)
        self.assertFalse(Blacklist.search([("email", "=", "carla@example.com")]).active)
        self.assertFalse(self.customer.is_blacklisted)
        # The same for phone numbers.
        self._event("opt_out", channel=self.sms, company=self.company_b)
        self._event("opt_in", channel=self.sms)
        number = self.customer.phone_sanitized
        self.assertTrue(self.env["phone.blacklist"].search([("number", "=", number)]).active)


@tagged("post_install", "-at_install", "ecrm")
class TestEcrmConsentAtSendTime(EcrmConsentCommon, MockEmail):
    def test_mailing_checks_consent_when_sent(self):
        other = self.env["res.partner"].create({"name": "Otto", "email": "otto@example.com"})
        mailing = self.env["mailing.mailing"].create(
            {
                "name": "News",
                "subject": "News",
                "body_html": "<p>News</p>",
                "mailing_model_id": self.env["ir.model"]._get_id("res.partner"),
                "mailing_domain": [("id", "in", (self.customer | other).ids)],
            }
        )
        mailing.action_put_in_queue()
        # Otto opts out while the mailing waits in the queue: the opt-out wins.
        self._event("opt_out", partner=other)
        with self.mock_mail_gateway(mail_unlink_sent=False):
            mailing.action_send_mail()
        self.assertEqual(mailing.mailing_trace_ids.mapped("res_id"), self.customer.ids)

    def test_segment_feeds_mailing(self):
        segment = self.env["ecrm.segment"].create(
            {
                "name": "Carla and friends",
                "company_id": self.company_a.id,
                "domain": repr([("email", "ilike", "carla@")]),
            }
        )
        self.assertEqual(segment.partner_count, 1)
        mailing = self.env["mailing.mailing"].create(
            {
                "name": "Segment mailing",
                "subject": "Hi",
                "body_html": "<p>Hi</p>",
                "mailing_model_id": self.env["ir.model"]._get_id("res.partner"),
                "ecrm_segment_id": segment.id,
            }
        )
        self.assertEqual(mailing._get_recipients(), self.customer.ids)
        with self.mock_mail_gateway(mail_unlink_sent=False):
            mailing.action_send_mail()
        self.assertEqual(mailing.mailing_trace_ids.mapped("res_id"), self.customer.ids)

    def test_double_opt_in_mail(self):
        with self.mock_mail_gateway(mail_unlink_sent=False):
            self.customer.action_ecrm_request_double_opt_in()
        mail = self.env["mail.mail"].search(
            [("model", "=", "res.partner"), ("res_id", "=", self.customer.id)], limit=1
        )
        self.assertIn("/ecrm/consent/confirm/", mail.body_html)
        self.assertFalse(
            self.Event.search([("partner_id", "=", self.customer.id)]), "asking records nothing"
        )
        with self.assertRaises(UserError):
            self.env["res.partner"].create({"name": "No mail"}).action_ecrm_request_double_opt_in()


@tagged("post_install", "-at_install", "ecrm")
class TestEcrmConsentProperty(EcrmConsentCommon):
    """Random consent histories: no customer is ever reachable without consent."""

    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        policy=st.sampled_from(["opt_in", "opt_out"]),
        blacklisted=st.booleans(),
        history=st.lists(
            st.tuples(
                st.sampled_from(["opt_in", "opt_out", "unknown", "pause"]),
                st.integers(min_value=-1000, max_value=0),  # minutes from now
                st.integers(min_value=-60, max_value=60),  # pause end, minutes from now
            ),
            max_size=6,
        ),
    )
    def test_no_contact_without_consent(self, policy, blacklisted, history):
        self.env.cr.execute("SAVEPOINT ecrm_property")
        try:
            self._check_history(policy, blacklisted, history)
        finally:
            self.env.cr.execute("ROLLBACK TO SAVEPOINT ecrm_property")
            self.env.invalidate_all()

    def _check_history(self, policy, blacklisted, history):
        self.company_a.ecrm_consent_default_policy = policy
        partner = self.env["res.partner"].create({"name": "P", "email": "p@example.com"})
        if blacklisted:
            self.env["mail.blacklist"].create({"email": "p@example.com"})
        # "now" read after the blacklisting, which records its opt-out at its own now: read
        # before, a second boundary in between put that opt-out after the events at now.
        now = fields.Datetime.now()
        for index, (state, minutes, pause_minutes) in enumerate(history):
            self._event(
                state,
                partner=partner,
                date=now + timedelta(minutes=minutes, seconds=index),
                pause_until=now + timedelta(minutes=pause_minutes) if state == "pause" else False,
            )
        # The oracle: the latest non-pause event decides (blacklisting is an opt-out at
        # "now", recorded before the others), the latest pause pauses.
        timeline = [(minutes, index, state, pause) for index, (state, minutes, pause) in
                    enumerate(history)]  # fmt: skip
        if blacklisted:
            timeline.append((0, -1, "opt_out", 0))
        timeline.sort()
        states = [item[2] for item in timeline if item[2] != "pause"]
        pauses = [item[3] for item in timeline if item[2] == "pause"]
        state = states[-1] if states else "unknown"
        paused = bool(pauses) and pauses[-1] > 0
        allowed = state != "opt_out" and (state == "opt_in" or policy == "opt_out") and not paused
        # Odoo's blacklist follows the consent of every company: blacklisting opted the
        # customer out in company B too, and no event here changes that.
        listed = state == "opt_out" or blacklisted
        allowed = allowed and not listed
        entry = self.env["mail.blacklist"].search([("email", "=", "p@example.com")])
        self.assertEqual(bool(entry), listed)
        reason = self._reason(partner=partner)
        self.assertEqual(not reason, allowed, (policy, blacklisted, history, reason))
        # The searches (segments) agree: they use the same rule written as a conjunction.
        found = self.env["res.partner"].search_count(
            [("id", "=", partner.id), ("ecrm_email_contactable", "=", True)]
        )
        self.assertEqual(bool(found), allowed, (policy, blacklisted, history))
        # The sending path of mailings agrees.
        mailing = self.env["mailing.mailing"].create(
            {
                "name": "Property",
                "subject": "S",
                "body_html": "<p>B</p>",
                "mailing_model_id": self.env["ir.model"]._get_id("res.partner"),
                "mailing_domain": [("id", "=", partner.id)],
            }
        )
        self.assertEqual(bool(mailing._get_remaining_recipients()), allowed)


@tagged("post_install", "-at_install", "ecrm")
class TestEcrmConsentPages(HttpCase, EcrmConsentCommon):
    def _token(self, partner=None, company=None):
        return (partner or self.customer)._ecrm_preference_token(company or self.company_a)

    def _csrf(self, response):
        match = re.search(r'name="csrf_token" value="([^"]+)"', response.text)
        self.assertTrue(match, "the page has a form with a CSRF token")
        return match.group(1)

    def test_bad_tokens_get_a_clear_4xx_and_change_nothing(self):
        good = self._token()
        expired = tools.hash_sign(
            self.env(su=True),
            "ecrm_preferences",
            {"p": self.customer.id, "c": self.company_a.id},
            expiration=fields.Datetime.now() - timedelta(days=1),
        )
        tampered = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
        other_scope = tools.hash_sign(
            self.env(su=True), "ecrm_double_opt_in", {"p": self.customer.id, "c": 1}
        )
        for token in (expired, tampered, "garbage", "%00", other_scope, "A" * 500):
            for method in ("GET", "POST"):
                url = f"/ecrm/preferences/{token}"
                response = (
                    self.url_open(url)
                    if method == "GET"
                    else self.url_open(url, data={"channel_1_shown": "1"})
                )
                self.assertIn(response.status_code, (400, 403, 404), (token, method))
                self.assertNotIn("Traceback", response.text)
            response = self.url_open(
                f"/ecrm/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"}
            )
            self.assertIn(response.status_code, (400, 403, 404))
        self.assertFalse(self.Event.search([("partner_id", "=", self.customer.id)]))

    def test_get_never_changes_anything(self):
        token = self._token()
        for url in (
            f"/ecrm/preferences/{token}",
            f"/ecrm/unsubscribe/{token}",
            f"/ecrm/preferences/{token}?channel_{self.email.id}_shown=1",
        ):
            response = self.url_open(url)
            self.assertEqual(response.status_code, 200, url)
        self.assertFalse(self.Event.search([("partner_id", "=", self.customer.id)]))

    def test_preference_centre_post(self):
        token = self._token()
        page = self.url_open(f"/ecrm/preferences/{token}")
        self.assertIn("Email", page.text)
        self.assertIn("carla", page.text.lower())
        data = {"csrf_token": self._csrf(page), f"channel_{self.email.id}_shown": "1"}
        response = self.url_open(f"/ecrm/preferences/{token}", data=data)
        self.assertEqual(response.status_code, 200)
        self.assertIn("o_ecrm_preferences_saved", response.text)
        event = self.Event.search([("partner_id", "=", self.customer.id)])
        self.assertEqual(event.state, "opt_out")
        self.assertEqual(event.source, "preference_centre")
        self.assertEqual(event.ip_address, "127.0.0.1")
        self.assertTrue(event.consent_text_version)
        self.assertEqual(self._reason(), "opted_out")

    def test_one_click_unsubscribe_without_session(self):
        token = self._token()
        # A mail client posts alone: no session, no cookie, no CSRF token.
        response = requests.post(
            f"{self.base_url()}/ecrm/unsubscribe/{token}",
            data={"List-Unsubscribe": "One-Click"},
            timeout=30,
        )
        self.assertEqual(response.status_code, 200)
        event = self.Event.search([("partner_id", "=", self.customer.id)])
        self.assertEqual((event.state, event.source), ("opt_out", "unsubscribe"))
        self.assertTrue(self.customer.is_blacklisted)

    def test_unsubscribe_of_another_company_customer(self):
        """A link naming company A for a customer of company B still unsubscribes them,
        in company B (where their consent lives), never failing on the company check."""
        token = self._token(partner=self.customer_b)
        response = requests.post(
            f"{self.base_url()}/ecrm/unsubscribe/{token}",
            data={"List-Unsubscribe": "One-Click"},
            timeout=30,
        )
        self.assertEqual(response.status_code, 200)
        event = self.Event.search([("partner_id", "=", self.customer_b.id)])
        self.assertEqual((event.state, event.company_id), ("opt_out", self.company_b))
        self.assertTrue(self.customer_b.is_blacklisted)

    def test_double_opt_in_link(self):
        token = tools.hash_sign(
            self.env(su=True),
            "ecrm_double_opt_in",
            {"p": self.customer.id, "c": self.company_a.id, "ch": self.email.id},
            expiration_hours=72,
        )
        page = self.url_open(f"/ecrm/consent/confirm/{token}")
        self.assertEqual(page.status_code, 200)
        self.assertFalse(self.Event.search([("partner_id", "=", self.customer.id)]))
        response = self.url_open(
            f"/ecrm/consent/confirm/{token}", data={"csrf_token": self._csrf(page)}
        )
        self.assertIn("o_ecrm_confirmed", response.text)
        event = self.Event.search([("partner_id", "=", self.customer.id)])
        self.assertEqual((event.state, event.source), ("opt_in", "double_opt_in"))

    def _form_as_shown(self, page):
        """The data a browser posts for the page unchanged (disabled inputs left out)."""
        tree = lxml.html.fromstring(page.text)
        data = {"csrf_token": self._csrf(page)}
        for node in tree.xpath("//form[hasclass('o_ecrm_preferences_form')]//input"):
            if node.get("disabled") is not None or node.get("name") == "csrf_token":
                continue
            if node.get("type") == "checkbox":
                if node.get("checked") is not None:
                    data[node.get("name")] = "on"
            else:
                data[node.get("name")] = node.get("value")
        return data

    def test_preference_centre_shows_marketing_channels_with_an_address(self):
        token = self._token()
        channels = self.env["ecrm.channel"].search([])
        by_code = {channel.code: channel for channel in channels}

        def shown():
            page = self.url_open(f"/ecrm/preferences/{token}")
            return {code for code, ch in by_code.items() if f'id="channel_{ch.id}"' in page.text}

        self.customer.write({"phone": False, "street": False, "city": False})
        self.assertEqual(shown(), {"email"}, "Carla has an email address only")
        self.customer.write({"phone": "+32470111222", "street": "Rue 3", "city": "Namur"})
        self.assertEqual(shown(), {"email", "sms", "phone", "letter"})

    def test_unsubscribe_from_everything(self):
        self.customer.street = False  # email, SMS and phone; no letters
        token = self._token()
        page = self.url_open(f"/ecrm/preferences/{token}")
        self.assertIn("o_ecrm_unsubscribe_all", page.text)
        data = {**self._form_as_shown(page), "unsubscribe_all": "1"}
        response = self.url_open(f"/ecrm/preferences/{token}", data=data)
        self.assertEqual(response.status_code, 200)
        events = self.Event.search([("partner_id", "=", self.customer.id)])
        self.assertEqual(set(events.mapped("state")), {"opt_out"})
        self.assertEqual(set(events.channel_id.mapped("code")), {"email", "sms", "phone"})
        for channel in events.channel_id:
            self.assertEqual(self._reason(channel=channel), "opted_out", channel.code)

    def test_pause_can_be_lifted(self):
        token = self._token()
        page = self.url_open(f"/ecrm/preferences/{token}")
        self.url_open(f"/ecrm/preferences/{token}", data={**self._form_as_shown(page),
                                                           "pause_days": "30"})  # fmt: skip
        self.assertEqual(self._reason(), "paused")
        page = self.url_open(f"/ecrm/preferences/{token}")
        self.assertIn("o_ecrm_resume", page.text)
        response = self.url_open(
            f"/ecrm/preferences/{token}", data={"csrf_token": self._csrf(page), "resume": "1"}
        )
        self.assertEqual(response.status_code, 200)
        self.assertFalse(self._reason(), "contactable again")
        self.assertNotIn("o_ecrm_resume", response.text)

    def test_invalid_link_offers_a_new_one(self):
        page = self.url_open("/ecrm/preferences/garbage")
        self.assertEqual(page.status_code, 403)
        self.assertIn("o_ecrm_new_link_form", page.text)
        csrf = self._csrf(page)
        Mail = self.env["mail.mail"]
        sent_to = [("email_to", "=", "carla@example.com"), ("res_id", "=", self.customer.id)]
        for email in ("carla@example.com", "CARLA@example.com", "nobody@example.com"):
            response = self.url_open(
                "/ecrm/preferences/new_link", data={"csrf_token": csrf, "email": email}
            )
            self.assertEqual(response.status_code, 200)
            self.assertIn("o_ecrm_new_link_sent", response.text, "the same answer for all")
        mails = Mail.search(sent_to)
        self.assertEqual(len(mails), 1, "one link, then a pause")
        # The customer's own link (tokens carry their expiry: compared by their content).
        tokens = re.findall(r"/ecrm/preferences/([A-Za-z0-9_-]+)", mails.body_html)
        self.assertEqual(
            [tools.verify_hash_signed(self.env(su=True), "ecrm_preferences", t) for t in tokens],
            [{"p": self.customer.id, "c": self.company_a.id}],
        )
        self.assertFalse(Mail.search([("email_to", "=", "nobody@example.com")]))
        self.assertFalse(self.Event.search([("partner_id", "=", self.customer.id)]))

    def test_unchanged_form_while_paused_records_nothing(self):
        """Finding 11: only what the customer changed is recorded."""
        token = self._token()
        self._event("opt_out", channel=self.sms)
        channels = self.env["ecrm.channel"].search([])
        until = fields.Datetime.now() + timedelta(days=30)
        for channel in channels:
            self._event("pause", channel=channel, pause_until=until)
        count = self.Event.search_count([("partner_id", "=", self.customer.id)])
        page = self.url_open(f"/ecrm/preferences/{token}")
        data = self._form_as_shown(page)
        self.assertIn(f"channel_{self.email.id}", data, "paused: the switch shows on")
        self.assertNotIn(f"channel_{self.sms.id}", data, "opted out: off")
        response = self.url_open(f"/ecrm/preferences/{token}", data=data)
        self.assertEqual(response.status_code, 200)
        self.assertIn("o_ecrm_preferences_saved", response.text)
        self.assertEqual(self.Event.search_count([("partner_id", "=", self.customer.id)]), count)
        # A real change is still recorded, and only it.
        data.pop(f"channel_{self.email.id}")
        self.url_open(f"/ecrm/preferences/{token}", data=data)
        events = self.Event.search([("partner_id", "=", self.customer.id)])
        self.assertEqual(len(events), count + 1)
        self.assertEqual((events[0].channel_id, events[0].state), (self.email, "opt_out"))

    def test_bad_pause_days_answer_400(self):
        """Finding 12: pause_days is one of the offered values, else a form error."""
        token = self._token()
        page = self.url_open(f"/ecrm/preferences/{token}")
        csrf = self._csrf(page)
        for pause in ("²", "³", "9" * 5000, "45", "-30", " 30", "30.0", "0x1e"):
            data = {
                "csrf_token": csrf,
                f"channel_{self.email.id}_shown": "1",
                "pause_days": pause,
            }
            response = self.url_open(f"/ecrm/preferences/{token}", data=data)
            self.assertEqual(response.status_code, 400, pause[:10])
            self.assertIn("o_ecrm_preferences_error", response.text)
            self.assertNotIn("Traceback", response.text)
        self.assertFalse(self.Event.search([("partner_id", "=", self.customer.id)]))
        data["pause_days"] = "90"
        self.assertEqual(self.url_open(f"/ecrm/preferences/{token}", data=data).status_code, 200)
        consent = self.Consent.search(
            [("partner_id", "=", self.customer.id), ("channel_id", "=", self.email.id)]
        )
        self.assertGreater(consent.paused_until, fields.Datetime.now() + timedelta(days=89))

    def test_double_opt_in_link_after_unsubscribe(self):
        """Finding 10: a confirmation counts once and never undoes a later opt-out."""
        token = tools.hash_sign(
            self.env(su=True),
            "ecrm_double_opt_in",
            {"p": self.customer.id, "c": self.company_a.id, "ch": self.email.id},
            expiration_hours=72,
        )
        url = f"/ecrm/consent/confirm/{token}"
        csrf = self._csrf(self.url_open(url))
        self.assertIn("o_ecrm_confirmed", self.url_open(url, data={"csrf_token": csrf}).text)
        self.assertIn("o_ecrm_confirmed", self.url_open(url, data={"csrf_token": csrf}).text)
        mine = [("partner_id", "=", self.customer.id)]
        self.assertEqual(len(self.Event.search(mine)), 1, "the link counts once")
        response = requests.post(
            f"{self.base_url()}/ecrm/unsubscribe/{self._token()}",
            data={"List-Unsubscribe": "One-Click"},
            timeout=30,
        )
        self.assertEqual(response.status_code, 200)
        replay = self.url_open(url, data={"csrf_token": csrf})
        self.assertNotIn("o_ecrm_confirmed", replay.text)
        self.assertEqual(replay.status_code, 410)
        self.assertEqual(self.Event.search(mine, limit=1).state, "opt_out")
        self.assertEqual(self._reason(), "opted_out")
        self.assertTrue(self.customer.is_blacklisted)

    def test_preference_centre_tour(self):
        token = self._token()
        self.start_tour(f"/ecrm/preferences/{token}", "ecrm_preference_centre_tour")
        consent = self.Consent.search(
            [("partner_id", "=", self.customer.id), ("channel_id", "=", self.email.id)]
        )
        self.assertEqual(consent.state, "opt_out")
        self.assertTrue(consent.paused_until)
        self.assertEqual(self._reason(), "opted_out")


@tagged("post_install", "-at_install", "ecrm")
class TestEcrmSegment(EcrmConsentCommon):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.Segment = cls.env["ecrm.segment"]
        cls.tagged_partners = cls.env["res.partner"].create(
            [{"name": f"Seg {index}", "email": f"seg{index}@example.org"} for index in range(5)]
        )
        cls.tagged_b = cls.env["res.partner"].create(
            {"name": "Seg B", "email": "segb@example.org", "company_id": cls.company_b.id}
        )
        cls.domain = repr([("email", "=ilike", "seg%@example.org")])

    def test_ready_made_segments(self):
        codes = set(self.Segment.search([]).mapped("code"))
        self.assertLessEqual(
            {"champions", "at_risk_high_value", "new_customers", "hibernating", "email_loyal"},
            codes,
        )
        for segment in self.Segment.search([("code", "!=", False)]):
            self.assertGreaterEqual(segment.partner_count, 0)  # the domains evaluate

    def test_dynamic_and_frozen(self):
        segment = self.Segment.create(
            {"name": "Seg", "company_id": self.company_a.id, "domain": self.domain}
        )
        self.assertEqual(segment.partner_count, 5, "company B's customer is not in A's segment")
        segment_b = self.Segment.create(
            {"name": "Seg B", "company_id": self.company_b.id, "domain": self.domain}
        )
        self.assertEqual(segment_b.partner_count, 6, "shared customers are in B's too")
        segment.action_freeze()
        self.assertEqual(segment.mode, "frozen")
        self.assertEqual(segment.partner_ids, self.tagged_partners)
        self.env["res.partner"].create({"name": "Seg late", "email": "seg9@example.org"})
        segment.invalidate_recordset(["partner_count"])
        self.assertEqual(segment.partner_count, 5, "frozen: the list as it was")
        self.assertTrue(segment.frozen_date)
        segment.action_unfreeze()
        self.assertFalse(segment.partner_ids, "the kept list is emptied")
        self.assertFalse(self.tagged_partners.ecrm_frozen_segment_ids)
        self.assertEqual(segment.partner_count, 6)
        preview = segment.action_preview()
        self.assertEqual(
            len(self.env["res.partner"].with_company(self.company_a).search(preview["domain"])), 6
        )

    def test_invalid_domain(self):
        with self.assertRaises(ValidationError):
            self.Segment.create(
                {"name": "Bad", "company_id": self.company_a.id, "domain": "[('nope', '=', 1)]"}
            )

    def test_consent_in_segment_domain(self):
        self._event("opt_out", partner=self.tagged_partners[0])
        segment = self.Segment.create(
            {
                "name": "Reachable",
                "company_id": self.company_a.id,
                "domain": repr(
                    [("email", "=ilike", "seg%@example.org"), ("ecrm_email_contactable", "=", True)]
                ),
            }
        )
        self.assertEqual(segment.partner_count, 4)

    def test_company_rules(self):
        segment_b = self.Segment.create(
            {"name": "Seg B", "company_id": self.company_b.id, "domain": self.domain}
        )
        self.assertNotIn(segment_b, self.Segment.with_user(self.user_salesman).search([]))
        with self.assertRaises(AccessError):
            segment_b.with_user(self.user_salesman).read(["name"])

    def test_refresh_mailing_list(self):
        segment = self.Segment.create(
            {"name": "Seg list", "company_id": self.company_a.id, "domain": self.domain}
        )
        segment.action_refresh_mailing_list()
        emails = set(segment.mailing_list_id.contact_ids.mapped("email_normalized"))
        self.assertEqual(emails, set(self.tagged_partners.mapped("email_normalized")))
        self.tagged_partners[0].email = "moved@example.net"
        segment.action_refresh_mailing_list()
        segment.mailing_list_id.invalidate_recordset()
        self.assertEqual(len(segment.mailing_list_id.contact_ids), 4)
