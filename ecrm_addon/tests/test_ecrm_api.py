import json
from datetime import datetime, timedelta
from itertools import count

from odoo import Command, fields
from odoo.exceptions import AccessError, UserError
from odoo.tests import Form, HttpCase, new_test_user, tagged
from odoo.tools import file_open, mute_logger

from odoo.addons.ecrm_addon.models.ir_http import auth_failures

from .common import EcrmCommon

API_URL = "/ecrm/api/v1/interactions"
_refs = count()


class EcrmApiCommon(EcrmCommon, HttpCase):
    """Keys of API users in company A, in both companies, and without the group."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.Interaction = cls.env["ecrm.interaction"]
        cls.Unmatched = cls.env["ecrm.unmatched.event"]
        portal_ingest = "base.group_portal,ecrm_addon.group_ecrm_ingest"
        cls.api_user = new_test_user(
            cls.env,
            login="ecrm_api_a",
            name="Telephony A",
            groups=portal_ingest,
            company_id=cls.company_a.id,
            company_ids=[Command.set(cls.company_a.ids)],
        )
        cls.api_user_ab = new_test_user(
            cls.env,
            login="ecrm_api_ab",
            name="Telephony AB",
            groups=portal_ingest,
            company_id=cls.company_a.id,
            company_ids=[Command.set((cls.company_a | cls.company_b).ids)],
        )
        cls.key = cls._make_key(cls.api_user)
        cls.key_ab = cls._make_key(cls.api_user_ab)
        cls.key_employee = cls._make_key(cls.user_employee)
        cls.key_salesman = cls._make_key(cls.user_salesman)
        cls.key_manager = cls._make_key(cls.user_manager)
        cls.customer.write({"phone": "+1 202 555 0142", "ref": "CUST-CARLA"})
        cls.acme = cls.env["res.partner"].create(
            {"name": "Acme Bikes", "is_company": True, "email": "shared@acme.example.com"}
        )
        cls.ann = cls.env["res.partner"].create(
            {"name": "Ann Acme", "parent_id": cls.acme.id, "email": "ann@acme.example.com"}
        )
        cls.source_inbox = cls.env["ecrm.api.source"].create(
            {"name": "chat", "company_id": cls.company_a.id, "unknown_customer_policy": "inbox"}
        )
        cls.company_a.ecrm_api_unknown_policy = "reject"

    @classmethod
    def _make_key(cls, user, days=0.5):
        expiration = datetime.now() + timedelta(days=days)
        return cls.env["res.users.apikeys"].with_user(user)._generate("rpc", "test", expiration)

    def setUp(self):
        super().setUp()
        auth_failures.clear()
        self.addCleanup(auth_failures.clear)
        # the demo data holds API interactions too: count only this test's
        self.last_id = self.Interaction.search([], order="id desc", limit=1).id or 0

    def _event(self, **values):
        event = {
            "external_id": f"ext-{next(_refs)}",
            "source": "pbx",
            "channel": "phone",
            "direction": "inbound",
            "occurred_at": "2025-05-01T14:30:00+02:00",
            "email": "carla@example.com",
        }
        event.update(values)
        return {name: value for name, value in event.items() if value is not None}

    def _post(self, events=None, key=None, body=None, headers=None):
        if body is None:
            body = json.dumps({"events": events})
        if headers is None:
            headers = {"Authorization": f"Bearer {key or self.key}"}
        response = self.opener.post(
            self.base_url() + API_URL, data=body, headers=headers, timeout=60
        )
        self.assertEqual(response.headers["Content-Type"], "application/json; charset=utf-8")
        self.assertNotIn("Traceback", response.text)
        return response

    def _results(self, events, key=None):
        response = self._post(events, key=key)
        self.assertEqual(response.status_code, 200, response.text)
        return response.json()["results"]

    def _assert_error(self, response, status, message=None):
        self.assertEqual(response.status_code, status, response.text)
        body = response.json()
        self.assertEqual(body["status"], status)
        if message:
            self.assertIn(message, body["message"])
        return body

    def _api_interactions(self, **domain):
        self.env.invalidate_all()
        return self.Interaction.search(
            [("capture_mode", "=", "api"), ("id", ">", self.last_id)]
            + [(key, "=", value) for key, value in domain.items()]
        )


@tagged("post_install", "-at_install", "ecrm")
class TestEcrmApiIngestion(EcrmApiCommon):
    def test_batch_created_then_duplicates(self):
        events = [
            self._event(duration_seconds=90, outcome="done", subject="Delivery", summary="a\nb"),
            self._event(channel="email", direction="outbound"),
            self._event(channel="chat", customer_ref="CUST-CARLA", email=None),
        ]
        results = self._results(events)
        self.assertEqual([result["status"] for result in results], ["created"] * 3)
        self.assertEqual([result["index"] for result in results], [0, 1, 2])
        interactions = self.Interaction.browse([result["id"] for result in results])
        self.assertEqual(interactions.partner_id, self.customer)
        call = interactions[0]
        self.assertRecordValues(
            call,
            [
                {
                    "capture_mode": "api",
                    "source_system": "pbx",
                    "external_ref": events[0]["external_id"],
                    "channel_id": self.env.ref("ecrm_addon.ecrm_channel_phone").id,
                    "direction": "inbound",
                    "date": datetime(2025, 5, 1, 12, 30),
                    "duration": 0.025,
                    "outcome": "done",
                    "subject": "Delivery",
                    "company_id": self.company_a.id,
                    "commercial_partner_id": self.customer.id,
                    "create_uid": self.api_user.id,
                    "user_id": False,
                }
            ],
        )
        self.assertEqual(str(call.summary), "<p>a<br/>b</p>")

        again = self._results(events)
        self.assertEqual([result["status"] for result in again], ["duplicate"] * 3)
        self.assertEqual([result["id"] for result in again], interactions.ids)
        self.assertEqual(len(self._api_interactions(source_system="pbx")), 3)

    def test_duplicate_within_batch(self):
        event = self._event()
        results = self._results([event, dict(event), self._event(channel="nope")])
        self.assertEqual([r["status"] for r in results], ["created", "duplicate", "error"])
        self.assertEqual(results[1]["id"], results[0]["id"])
        self.assertEqual(results[2]["field"], "channel")

    def test_match_by_each_identifier(self):
        contact = self.env["res.partner"].create(
            {"name": "Dan Contact", "parent_id": self.acme.id, "ref": "DAN-1"}
        )
        cases = [
            ({"partner_id": self.customer.id, "email": None}, self.customer),
            ({"email": '"Carla" <CARLA@Example.COM>'}, self.customer),
            ({"phone": "(202) 555-0142", "email": None}, self.customer),  # company A is in the US
            ({"phone": "+12025550142", "email": None}, self.customer),
            ({"customer_ref": "DAN-1", "email": None}, contact),
            ({"email": "ann@acme.example.com"}, self.ann),
        ]
        results = self._results([self._event(**values) for values, _partner in cases])
        for (values, partner), result in zip(cases, results, strict=True):
            self.assertEqual(result["status"], "created", (values, result))
            interaction = self.Interaction.browse(result["id"])
            self.assertEqual(interaction.partner_id, partner, values)
            self.assertEqual(interaction.commercial_partner_id, partner.commercial_partner_id)

    def test_phone_read_in_the_company_country(self):
        self.company_b.country_id = self.env.ref("base.de")
        berliner = self.env["res.partner"].create(
            {"name": "Berta", "phone": "+49 30 901820", "company_id": self.company_b.id}
        )
        results = self._results(
            [self._event(phone="030 901820", email=None, company_id=self.company_b.id)],
            key=self.key_ab,
        )
        self.assertEqual(results[0]["status"], "created", results)
        self.assertEqual(self.Interaction.browse(results[0]["id"]).partner_id, berliner)
        results = self._results([self._event(phone="12", email=None)])
        self.assertEqual((results[0]["status"], results[0]["field"]), ("error", "phone"))

    def test_contacts_of_one_customer_and_ambiguous(self):
        self.ann.email = "shared@acme.example.com"  # the company and its contact share it
        results = self._results([self._event(email="shared@acme.example.com")])
        self.assertEqual(self.Interaction.browse(results[0]["id"]).partner_id, self.acme)

        self.env["res.partner"].create({"name": "Other Co", "email": "carla@example.com"})
        results = self._results([self._event(), self._event(source="chat")])
        self.assertEqual((results[0]["status"], results[0]["field"]), ("error", "email"))
        self.assertIn("2 customers", results[0]["message"])
        self.assertEqual(results[1]["status"], "parked")
        parked = self.Unmatched.browse(results[1]["unmatched_id"])
        self.assertEqual(parked.reason, "ambiguous")
        self.assertEqual(len(parked.candidate_ids), 2)

    def test_archived_partner_and_archived_source(self):
        self.customer.active = False
        results = self._results(
            [self._event(partner_id=self.customer.id, email=None), self._event()]
        )
        self.assertEqual([r["field"] for r in results], ["partner_id", "email"])
        self.customer.active = True
        self.source_inbox.active = False
        results = self._results([self._event(source="chat")])
        self.assertEqual((results[0]["status"], results[0]["field"]), ("error", "source"))

    def test_validation_names_the_field(self):
        future = (datetime.now() + timedelta(days=1)).isoformat() + "+00:00"
        cases = [
            ({"external_id": None}, "external_id"),
            ({"external_id": 12}, "external_id"),
            ({"external_id": "x" * 256}, "external_id"),
            ({"external_id": "a\x00b"}, "external_id"),
            ({"source": ""}, "source"),
            ({"channel": "Phone"}, "channel"),
            ({"channel": "carrier_pigeon"}, "channel"),
            ({"direction": "sideways"}, "direction"),
            ({"occurred_at": "2025-05-01T14:30:00"}, "occurred_at"),
            ({"occurred_at": "yesterday"}, "occurred_at"),
            ({"occurred_at": future}, "occurred_at"),
            ({"occurred_at": "1969-12-31T23:00:00Z"}, "occurred_at"),
            ({"occurred_at": "9999-12-31T23:59:59-14:00"}, "occurred_at"),
            ({"email": None}, "customer"),
            ({"phone": "+12025550142"}, "phone"),
            ({"email": "not an email"}, "email"),
            ({"email": ["carla@example.com"]}, "email"),
            ({"partner_id": True, "email": None}, "partner_id"),
            ({"partner_id": "7", "email": None}, "partner_id"),
            ({"partner_id": 2**40, "email": None}, "partner_id"),
            ({"partner_id": 999_999_999, "email": None}, "partner_id"),
            ({"partner_id": self.customer_b.id, "email": None}, "partner_id"),
            ({"duration_seconds": -1}, "duration_seconds"),
            ({"duration_seconds": "60"}, "duration_seconds"),
            ({"duration_seconds": 1e9}, "duration_seconds"),
            ({"outcome": "great"}, "outcome"),
            ({"subject": {"nested": {"deep": []}}}, "subject"),
            ({"summary": "x" * 10_001}, "summary"),
            ({"company_id": "1"}, "company_id"),
            ({"url": "https://example.com"}, "url"),
            ({"channel": "web", "duration_seconds": 5}, "duration_seconds"),
            ({"colour": "blue"}, "colour"),
        ]
        results = self._results([self._event(**values) for values, _field in cases])
        for (values, field), result in zip(cases, results, strict=True):
            self.assertEqual((result["status"], result["field"]), ("error", field), values)
        results = self._results(["an event", 12, None, []])
        self.assertEqual({(r["status"], r["field"]) for r in results}, {("error", None)})
        self.assertFalse(self._api_interactions())

    def test_utm_values(self):
        campaign = self.env["utm.campaign"].create({"title": "Spring Sale"})
        results = self._results(
            [self._event(utm_campaign="spring sale ", utm_source="No Such Source")]
        )
        self.assertEqual(results[0]["status"], "created")
        self.assertEqual(results[0]["warnings"][0]["field"], "utm_source")
        interaction = self.Interaction.browse(results[0]["id"])
        self.assertEqual(interaction.campaign_id, campaign)
        self.assertFalse(interaction.source_id)

    def test_insert_covers_every_stored_field(self):
        """The API writes ecrm_interaction with SQL: a new stored field must be handled there."""
        stored = {
            name
            for name, field in self.Interaction._fields.items()
            if field.store and field.column_type
        }
        written_or_empty = {
            # written by EcrmApiIngest._ingest_insert_rows
            "partner_id", "commercial_partner_id", "channel_id", "direction", "date",
            "subject", "summary", "duration", "outcome", "company_id", "capture_mode",
            "source_system", "external_ref", "campaign_id", "source_id", "medium_id",
            "create_uid", "create_date", "write_uid", "write_date", "id",
            # left empty on purpose
            "user_id", "team_id", "sale_order_id", "res_model", "res_id",
        }  # fmt: skip
        self.assertEqual(stored, written_or_empty)


@tagged("post_install", "-at_install", "ecrm")
class TestEcrmApiStatuses(EcrmApiCommon):
    def test_400_malformed_bodies(self):
        for body in [
            b"{not json",
            b"",
            b"[]",
            b'"events"',
            b'{"events": {}}',
            b'{"events": [], "extra": 1}',
            b'{"events": [{"duration_seconds": NaN}]}',
            b'{"events": [1e999999]}' + b"\xff",
            b"[" * 100_000 + b"]" * 100_000,
            b'{"events": ["\\ud800"], "\\udc00": 1}',
        ]:
            with self.subTest(body=body[:40]):
                self._assert_error(self._post(body=body), 400)

    def test_401_missing_or_invalid_key(self):
        expired = self._make_key(self.api_user, days=-1)
        for headers in [
            {},
            {"Authorization": "Bearer"},
            {"Authorization": "Bearer not-a-key"},
            {"Authorization": f"Basic {self.key}"},
            {"Authorization": f"Bearer {expired}"},
            {"Authorization": f"Bearer {self.key}x"},
        ]:
            with self.subTest(headers=headers):
                response = self._post([self._event()], headers=headers)
                self._assert_error(response, 401, "Authorization: Bearer")
                self.assertEqual(response.headers["WWW-Authenticate"].strip().lower(), "bearer")
        self.api_user.active = False
        self._assert_error(self._post([self._event()]), 401)
        self.assertFalse(self._api_interactions())

    def test_403_no_right_or_company(self):
        for key in (self.key_employee, self.key_salesman):
            self._assert_error(self._post([self._event()], key=key), 403, "ingestion group")
        self.assertEqual(
            self._results([self._event()], key=self.key_manager)[0]["status"], "created"
        )
        events = [self._event(), self._event(company_id=self.company_b.id)]
        self._assert_error(self._post(events), 403, "event 1: company_id")
        self.assertEqual(len(self._api_interactions()), 1, "the refused batch wrote nothing")

    def test_405_and_404_are_json(self):
        response = self.url_open(API_URL, headers={"Authorization": f"Bearer {self.key}"})
        self._assert_error(response, 405)
        self.assertEqual(response.headers["Allow"], "POST")
        self._assert_error(self.url_open("/ecrm/api/v1/nothing"), 404)

    def test_413_too_many_events_or_bytes(self):
        self.env["ir.config_parameter"].set_param("ecrm_addon.api_max_events", 3)
        self._assert_error(self._post([self._event() for _i in range(4)]), 413, "at most 3")
        body = json.dumps({"events": [self._event(summary="x" * 10_000)] * 200})
        self._assert_error(self._post(body=body), 413, "bytes")
        self.assertEqual(len(self._results([self._event() for _i in range(3)])), 3)

    def test_411_chunked_body(self):
        chunks = iter([b'{"events": ', json.dumps([self._event()]).encode(), b"}"])
        self._assert_error(self._post(body=chunks), 411, "Content-Length")
        self.assertFalse(self._api_interactions())

    def test_429_after_repeated_failures(self):
        self.env["ir.config_parameter"].set_param("ecrm_addon.api_auth_max_failures", 3)
        bad = {"Authorization": "Bearer wrong"}
        for _i in range(3):
            self._assert_error(self._post([self._event()], headers=bad), 401)
        response = self._post([self._event()])  # even a valid key is refused now
        self._assert_error(response, 429, "too many failed authentications")
        self.assertGreater(int(response.headers["Retry-After"]), 0)
        self.assertFalse(self._api_interactions())
        auth_failures.clear()  # the window has passed
        self.assertEqual(self._results([self._event()])[0]["status"], "created")

    def test_throttle_window_and_bounds(self):
        failures = type(auth_failures)(max_addresses=2)
        for at in (0, 1, 2):
            failures.add("a", 3, now=at)
        self.assertEqual(failures.retry_after("a", 3, 10, now=5), 5)
        self.assertEqual(failures.retry_after("a", 3, 10, now=10.5), 0)
        self.assertEqual(failures.retry_after("b", 3, 10, now=5), 0)
        failures.add("b", 3, now=0)
        failures.add("c", 3, now=0)
        self.assertEqual(failures.retry_after("a", 3, 10, now=5), 0, "oldest address forgotten")

    def test_openapi_document(self):
        response = self.url_open("/ecrm/api/v1/openapi.json")
        self.assertEqual(response.status_code, 200)
        spec = response.json()
        with file_open("ecrm_addon/static/api/openapi.json") as document:
            self.assertEqual(spec, json.load(document))
        self.assertEqual(spec["openapi"][:2], "3.")
        responses = spec["paths"][API_URL]["post"]["responses"]
        self.assertLessEqual({"200", "400", "401", "403", "413", "429"}, set(responses))


@tagged("post_install", "-at_install", "ecrm")
class TestEcrmApiUnmatched(EcrmApiCommon):
    def test_reject_policy_for_unknown_sources(self):
        results = self._results([self._event(email="nobody@example.com")])
        self.assertEqual((results[0]["status"], results[0]["field"]), ("error", "email"))
        self.assertIn("no customer", results[0]["message"])
        self.assertFalse(self.Unmatched.search([]))
        self.company_a.ecrm_api_unknown_policy = "inbox"
        results = self._results([self._event(email="nobody@example.com")])
        self.assertEqual(results[0]["status"], "parked")

    def test_park_then_match(self):
        events = [
            self._event(source="chat", channel="chat", email="new@example.com"),
            self._event(source="chat", channel="chat", email="NEW@example.com"),
            self._event(source="chat", channel="chat", phone="+1 202 555 0177", email=None),
        ]
        results = self._results(events)
        self.assertEqual([r["status"] for r in results], ["parked"] * 3)
        again = self._results(events)
        self.assertEqual([r["status"] for r in again], ["duplicate"] * 3)
        self.assertEqual([r["unmatched_id"] for r in again], [r["unmatched_id"] for r in results])
        parked = self.Unmatched.browse([r["unmatched_id"] for r in results])
        self.assertEqual(parked.mapped("identifier"), ["new@example.com"] * 2 + ["+12025550177"])
        self.assertEqual(set(parked.mapped("state")), {"pending"})
        self.assertFalse(self._api_interactions())

        newcomer = self.env["res.partner"].create({"name": "Nina New"})
        wizard = Form(
            self.env["ecrm.unmatched.match.wizard"]
            .with_user(self.user_salesman)
            .with_context(default_unmatched_ids=parked[:1].ids)
        )
        wizard.partner_id = newcomer
        wizard.save().action_match()
        self.assertEqual(parked.mapped("state"), ["resolved", "resolved", "pending"])
        interactions = self._api_interactions(partner_id=newcomer.id)
        self.assertEqual(len(interactions), 2, "the other event with the same email too")
        self.assertEqual(parked[:2].interaction_id, interactions)
        self.assertEqual(set(interactions.mapped("create_uid")), {self.user_salesman})

        again = self._results(events)
        self.assertEqual([r["status"] for r in again], ["duplicate"] * 3)
        self.assertEqual({r.get("id") for r in again[:2]}, set(interactions.ids))

    def test_create_customer_and_discard(self):
        results = self._results(
            [
                self._event(source="chat", email="fresh@example.com", customer_name="Fred"),
                self._event(source="chat", customer_ref="NOPE-1", email=None),
                self._event(source="chat", channel="web", email="fresh@example.com", url="/a"),
            ]
        )
        parked = self.Unmatched.browse([r["unmatched_id"] for r in results])
        (parked[0] | parked[2]).with_user(self.user_manager).action_create_customer()
        customer = parked[0].partner_id
        self.assertRecordValues(
            customer,
            [{"name": "Fred", "email": "fresh@example.com", "company_id": self.company_a.id}],
        )
        self.assertEqual(parked[2].interaction_id.channel_id.code, "web")
        self.assertEqual(parked[2].interaction_id.partner_id, customer)
        parked[1].with_user(self.user_salesman).action_discard()
        self.assertEqual(parked.mapped("state"), ["resolved", "discarded", "resolved"])
        with self.assertRaises(UserError):
            parked[1].with_user(self.user_manager).action_create_customer()

    def test_match_refuses_other_company_customer(self):
        results = self._results([self._event(source="chat", email="x@example.com")])
        parked = self.Unmatched.browse(results[0]["unmatched_id"])
        with self.assertRaises(UserError):
            parked._resolve(self.customer_b)
        self.assertEqual(parked.state, "pending")

    def test_inbox_is_per_company(self):
        results = self._results([self._event(source="chat", email="x@example.com")])
        parked = self.Unmatched.browse(results[0]["unmatched_id"])
        self.assertEqual(parked.company_id, self.company_a)
        self.assertFalse(self.Unmatched.with_user(self.user_salesman_b).search([]))
        self.assertEqual(self.Unmatched.with_user(self.user_salesman).search([]), parked)


@tagged("post_install", "-at_install", "ecrm")
class TestEcrmApiWebVisits(EcrmApiCommon):
    def _web(self, minute, **values):
        moment = datetime(2025, 5, 1, 10, 0) + timedelta(minutes=minute)
        web = {
            "source": "matomo",
            "channel": "web",
            "occurred_at": moment.isoformat() + "+00:00",
            "visitor_id": "v1",
            "url": f"https://shop.example.com/p{minute}",
            "page": f"Page {minute}",
        }
        return self._event(**dict(web, **values))

    def test_sessionization(self):
        results = self._results(
            [self._web(0), self._web(10), self._web(35, product="Espresso X"), self._web(200)]
        )
        self.assertEqual([r["status"] for r in results], ["created", "merged", "merged", "created"])
        visit_1, visit_2 = (self.Interaction.browse(results[i]["id"]) for i in (0, 3))
        self.assertEqual(results[1]["id"], visit_1.id)
        self.assertEqual(results[2]["id"], visit_1.id)
        self.assertRecordValues(
            visit_1,
            [
                {
                    "date": datetime(2025, 5, 1, 10, 0),
                    "duration": 35 / 60,
                    "subject": "Web visit: 3 views",
                    "external_ref": results[0]["external_id"],
                }
            ],
        )
        self.assertIn("Product: Espresso X", str(visit_1.summary))
        self.assertIn("Page: Page 10", str(visit_1.summary))
        self.assertEqual(len(visit_1.web_event_ids), 3)
        self.assertEqual(len(visit_2.web_event_ids), 1)

        # later batches: a late event joins visit 1 and moves its start, another visitor
        # has its own visit, a retried event is a duplicate of its visit
        results = self._results(
            [
                self._web(-20),
                self._web(5, visitor_id="v2"),
                self._web(60),
                dict(self._web(0), external_id=visit_1.external_ref),
            ]
        )
        self.assertEqual(
            [r["status"] for r in results], ["merged", "created", "merged", "duplicate"]
        )
        self.assertEqual({results[0]["id"], results[2]["id"], results[3]["id"]}, {visit_1.id})
        self.env.invalidate_all()
        self.assertEqual(visit_1.date, datetime(2025, 5, 1, 9, 40))
        self.assertEqual(visit_1.duration, 80 / 60)
        self.assertEqual(visit_1.subject, "Web visit: 5 views")
        self.assertEqual(len(self._api_interactions(source_system="matomo")), 3)

    def test_window_setting_and_long_visits(self):
        self.env["ir.config_parameter"].set_param("ecrm_addon.api_web_session_minutes", 5)
        results = self._results([self._web(0), self._web(4), self._web(10)])
        self.assertEqual([r["status"] for r in results], ["created", "merged", "created"])
        events = [self._web(100 + minute) for minute in range(60)]
        results = self._results(events)
        visit = self.Interaction.browse(results[0]["id"])
        self.assertEqual(visit.subject, "Web visit: 60 views")
        self.assertIn("and 10 more views", str(visit.summary))

    def test_web_visits_per_customer_and_escaped(self):
        results = self._results(
            [
                self._web(0, page="<script>alert(1)</script>"),
                self._web(1, email=None, partner_id=self.ann.id),
            ]
        )
        self.assertEqual([r["status"] for r in results], ["created", "created"])
        visit = self.Interaction.browse(results[0]["id"])
        self.assertNotIn("<script>", str(visit.summary))


@tagged("post_install", "-at_install", "ecrm")
class TestEcrmApiCompanies(EcrmApiCommon):
    def test_company_isolation(self):
        event_b = self._event(email="bruno@example.com", company_id=self.company_b.id)
        self._assert_error(self._post([event_b]), 403)
        results = self._results([event_b, self._event()], key=self.key_ab)
        self.assertEqual([r["status"] for r in results], ["created", "created"])
        interaction_b, interaction_a = self.Interaction.browse([r["id"] for r in results])
        self.assertEqual(interaction_b.company_id, self.company_b)
        self.assertEqual(interaction_a.company_id, self.company_a, "default: the main company")
        # company B's customer is unknown in company A, by email and by id
        results = self._results(
            [
                self._event(email="bruno@example.com"),
                self._event(email=None, partner_id=self.customer_b.id),
            ],
            key=self.key_ab,
        )
        self.assertEqual([r["field"] for r in results], ["email", "partner_id"])
        salesman_a = self.Interaction.with_user(self.user_salesman)
        visible = salesman_a.search([("id", "in", (interaction_a | interaction_b).ids)])
        self.assertEqual(visible, interaction_a)
        # the same external id is another event in another company
        twin = dict(event_b, company_id=self.company_a.id, email="carla@example.com")
        self.assertEqual(self._results([twin], key=self.key_ab)[0]["status"], "created")

    def test_channel_of_another_company(self):
        self.env["ecrm.channel"].create(
            {"name": "B Hotline", "code": "b_hotline", "company_id": self.company_b.id}
        )
        results = self._results([self._event(channel="b_hotline")], key=self.key_ab)
        self.assertEqual(results[0]["field"], "channel")

    def test_ingest_group_grants_nothing(self):
        group = self.env.ref("ecrm_addon.group_ecrm_ingest")
        self.assertFalse(group.implied_ids)
        self.assertFalse(self.env["ir.model.access"].search([("group_id", "=", group.id)]))
        self.assertFalse(self.env["ir.rule"].search([("groups", "in", group.ids)]))
        self.assertTrue(self.api_user.share, "a portal-type user: no internal access")
        self._results([self._event()])
        for model in ("ecrm.interaction", "ecrm.unmatched.event", "ecrm.api.source"):
            with self.assertRaises(AccessError), mute_logger("odoo.models"):
                self.env[model].with_user(self.api_user).search([])
        partners = self.env["res.partner"].with_user(self.api_user).search([])
        self.assertNotIn(self.customer, partners)


@tagged("post_install", "-at_install", "ecrm")
class TestEcrmApiAccessWizard(EcrmApiCommon):
    def test_manager_creates_access(self):
        wizard = Form(self.env["ecrm.api.access.wizard"].with_user(self.user_manager))
        wizard.name = "Web Shop"
        self.assertEqual(wizard.login, "ecrm-api-web-shop")
        action = wizard.save().action_create()
        self.assertEqual(action["res_model"], "ecrm.api.key.show", "the e-CRM key dialog")
        key = action["context"]["default_key"]
        user = self.env["res.users"].search([("login", "=", "ecrm-api-web-shop")])
        self.assertTrue(user.share)
        self.assertEqual(
            user.groups_id,
            self.env.ref("base.group_portal") | self.env.ref("ecrm_addon.group_ecrm_ingest"),
        )
        self.assertEqual(user.company_ids, self.company_a)
        expiry = self.env["res.users.apikeys"].search([("user_id", "=", user.id)]).expiration_date
        self.assertAlmostEqual(
            expiry, fields.Datetime.now() + timedelta(days=90), delta=timedelta(minutes=5)
        )
        self.assertEqual(self._results([self._event()], key=key)[0]["status"], "created")

        # a new key for the same user, e.g. before the first one expires
        wizard = Form(self.env["ecrm.api.access.wizard"].with_user(self.user_manager))
        wizard.user_id = user
        key_2 = wizard.save().action_create()["context"]["default_key"]
        self.assertEqual(self._results([self._event()], key=key_2)[0]["status"], "created")

    def test_wizard_limits(self):
        with self.assertRaises(AccessError), mute_logger("odoo.models"):
            self.env["ecrm.api.access.wizard"].with_user(self.user_salesman).create({})
        wizard = (
            self.env["ecrm.api.access.wizard"]
            .with_user(self.user_manager)
            .create({"name": "Old", "expiration_date": fields.Datetime.now() - timedelta(days=1)})
        )
        with self.assertRaises(UserError):
            wizard.action_create()
        wizard = (
            self.env["ecrm.api.access.wizard"]
            .with_user(self.user_manager)
            .create({"user_id": self.user_salesman.id})
        )
        with self.assertRaises(UserError):
            wizard.action_create()


@tagged("post_install", "-at_install", "ecrm")
class TestEcrmApiConsents(EcrmApiCommon):
    """Consent events pushed by outside systems: same keys, errors and idempotency."""

    def _consent(self, **values):
        event = {
            "external_id": f"consent-{next(_refs)}",
            "source": "webform",
            "channel": "email",
            "state": "opt_in",
            "occurred_at": "2025-05-01T14:30:00+02:00",
            "email": "carla@example.com",
            "consent_text_version": "2025-04",
            "ip_address": "203.0.113.7",
        }
        event.update(values)
        return {name: value for name, value in event.items() if value is not None}

    def _post_consents(self, events, key=None):
        response = self.opener.post(
            self.base_url() + "/ecrm/api/v1/consents",
            data=json.dumps({"events": events}),
            headers={"Authorization": f"Bearer {key or self.key}"},
            timeout=60,
        )
        self.assertNotIn("Traceback", response.text)
        return response

    def test_consents_recorded_idempotent_and_checked(self):
        events = [
            self._consent(),
            self._consent(channel="sms", state="opt_out", email=None, phone="+1 202 555 0142"),
            self._consent(state="pause", pause_until="2999-01-01T00:00:00Z"),
            self._consent(state="maybe"),
            self._consent(channel="pigeon"),
            self._consent(email="nobody@example.com"),
            self._consent(purpose="nope"),
            self._consent(state="pause"),
        ]
        response = self._post_consents(events)
        self.assertEqual(response.status_code, 200, response.text)
        body = response.json()
        statuses = [result["status"] for result in body["results"]]
        self.assertEqual(statuses, ["created"] * 3 + ["error"] * 5)
        fields_in_error = [result["field"] for result in body["results"][3:]]
        self.assertEqual(fields_in_error, ["state", "channel", "email", "purpose", "pause_until"])
        Event = self.env["ecrm.consent.event"]
        recorded = Event.search([("source", "=", "api"), ("partner_id", "=", self.customer.id)])
        self.assertEqual(len(recorded), 3)
        proof = recorded.filtered(lambda e: e.channel_id.code == "email" and e.state == "opt_in")
        self.assertEqual(
            (proof.ip_address, proof.consent_text_version, proof.source_system),
            ("203.0.113.7", "2025-04", "webform"),
        )
        sms = self.env.ref("ecrm_addon.ecrm_channel_sms")
        self.assertEqual(
            self.env["ecrm.consent"]._check_contact(self.customer.ids, sms)[self.customer.id],
            "opted_out",
        )
        # The same batch again records nothing new.
        again = self._post_consents(events[:3]).json()
        self.assertEqual([r["status"] for r in again["results"]], ["duplicate"] * 3)
        self.assertEqual(
            [r["id"] for r in again["results"]], [r["id"] for r in body["results"][:3]]
        )
        self.assertEqual(
            Event.search_count([("source", "=", "api"), ("partner_id", "=", self.customer.id)]), 3
        )

    def test_consents_auth_and_companies(self):
        response = self._post_consents([self._consent()], key=self.key_employee)
        self.assertEqual(response.status_code, 403)
        response = self._post_consents([self._consent(company_id=self.company_b.id)])
        self.assertEqual(response.status_code, 403)
        self.assertFalse(self.env["ecrm.consent.event"].search([("source", "=", "api")]))
        response = self.opener.post(
            self.base_url() + "/ecrm/api/v1/consents",
            data=json.dumps({"events": [self._consent()]}),
            headers={"Authorization": "Bearer nope"},
            timeout=60,
        )
        self.assertEqual(response.status_code, 401)

    def test_consent_pause_until_errors_name_it(self):
        """Finding 14: a bad pause_until is reported as pause_until, not occurred_at."""
        for value in ("tomorrow", "2025-05-01T00:00:00", "0001-01-01T00:00:00+14:00", 7):
            response = self._post_consents([self._consent(state="pause", pause_until=value)])
            self.assertEqual(response.status_code, 200, response.text)
            result = response.json()["results"][0]
            self.assertEqual(result["field"], "pause_until", value)
            self.assertIn("pause_until", result["message"])
            self.assertNotIn("occurred_at", result["message"])

    def test_user_events_never_take_an_api_key(self):
        """Finding 5: a user's event cannot take the outside key of a shop's real event."""
        self.env["ecrm.consent.event"].with_user(self.user_salesman).create(
            {
                "partner_id": self.customer.id,
                "channel_id": self.env.ref("ecrm_addon.ecrm_channel_email").id,
                "state": "opt_in",
                "source_system": "webform",
                "external_ref": "shop-form-1",
            }
        )
        event = self._consent(
            external_id="shop-form-1",
            state="opt_out",
            occurred_at=fields.Datetime.now().isoformat() + "Z",
        )
        result = self._post_consents([event]).json()["results"][0]
        self.assertEqual(result["status"], "created", result)
        email = self.env.ref("ecrm_addon.ecrm_channel_email")
        self.assertEqual(
            self.env["ecrm.consent"]._check_contact(self.customer.ids, email)[self.customer.id],
            "opted_out",
        )
