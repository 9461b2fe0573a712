"""Thousands of generated hostile bodies against the ingestion API (hypothesis).

No answer may be a 5xx, carry a traceback or be anything but JSON, and the rows written
must be exactly the events the answers report as created (or parked).
"""

import json
import logging
import os
import unittest
from datetime import timezone

from odoo.tests import tagged

from .test_ecrm_api import API_URL, EcrmApiCommon

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # tests/requirements.txt; tests/run_tests.sh fails on the skip
    st = None

_logger = logging.getLogger(__name__)
EXAMPLES = int(os.environ.get("ECRM_FUZZ_EXAMPLES", "2200"))
STATUSES = {"created", "merged", "duplicate", "parked", "error"}


def _strategies(ids):
    """Bodies: raw bytes, arbitrary JSON, deep nesting, and mutated event batches."""
    hostile_text = st.one_of(
        st.text(max_size=30),
        st.text(alphabet=st.characters(codec="utf-8"), max_size=30),
        st.sampled_from(["", " ", "\x00", "a\x00b", "\ud800", "\udfff x", "\u202e", "\n\t"]),
        st.integers(min_value=1, max_value=300).map(lambda n: "x" * n * 100),
        st.just("y" * 100_000),
    )
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        hostile_text,
    )
    json_values = st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(st.text(max_size=12), children, max_size=4),
        ),
        max_leaves=12,
    )
    moments = st.datetimes(timezones=st.sampled_from([timezone.utc, None])).map(
        lambda moment: moment.isoformat()
    )
    field_values = {
        "external_id": st.one_of(st.sampled_from([f"fz-{n}" for n in range(40)]), hostile_text),
        "source": st.one_of(st.sampled_from(["fuzz", "fuzz-inbox", "fuzz-off"]), hostile_text),
        "channel": st.sampled_from(["phone", "email", "web", "chat", "fax", "nope", "Web", ""]),
        "direction": st.sampled_from(["inbound", "outbound", "in", ""]),
        "occurred_at": st.one_of(
            st.sampled_from(
                [
                    "2025-05-01T14:30:00+02:00",
                    "2025-05-01T14:45:00Z",
                    "2025-05-01T15:50:00-05:00",
                    "2025-05-01",
                    "2025-13-01T00:00:00Z",
                    "9999-12-31T23:59:59-14:00",
                    "0001-01-01T00:00:00+14:00",
                    "3000-01-01T00:00:00Z",
                ]
            ),
            moments,
            hostile_text,
        ),
        "partner_id": st.one_of(
            st.sampled_from(ids["partners"] + ids["other_company_partners"] + [0, -1, 2**31]),
            scalars,
        ),
        "email": st.one_of(
            st.sampled_from(["carla@example.com", "CARLA@example.com", "bruno@example.com"]),
            st.sampled_from(["new@example.com", "a@b", "@", "x" * 300 + "@example.com"]),
            st.emails(),
            hostile_text,
        ),
        "phone": st.one_of(
            st.sampled_from(["+1 202 555 0142", "(202) 555-0142", "+1 202 555 0177", "0"]),
            st.text(alphabet="+0123456789 ()-", max_size=40),
            hostile_text,
        ),
        "customer_ref": st.one_of(st.sampled_from(["CUST-CARLA", "NOPE"]), hostile_text),
        "company_id": st.one_of(st.sampled_from(ids["companies"]), scalars),
        "duration_seconds": scalars,
        "outcome": st.one_of(st.sampled_from(["done", "voicemail", "great"]), scalars),
        "subject": hostile_text,
        "summary": hostile_text,
        "customer_name": hostile_text,
        "utm_campaign": hostile_text,
        "visitor_id": st.one_of(st.sampled_from(["v1", "v2"]), hostile_text),
        "url": hostile_text,
        "page": hostile_text,
        "product": hostile_text,
    }
    good = {
        "external_id": st.sampled_from([f"fz-{n}" for n in range(300)]),
        "source": st.sampled_from(["fuzz", "fuzz-inbox"]),
        "channel": st.sampled_from(["phone", "email", "chat", "web", "web"]),
        "direction": st.sampled_from(["inbound", "outbound"]),
        "occurred_at": st.sampled_from(["2025-05-01T14:30:00+02:00", "2025-05-01T14:45:00Z"])
        | st.integers(0, 600).map(lambda minute: f"2025-05-02T{minute // 60:02}:{minute % 60:02}Z"),
    }
    good_identifiers = st.one_of(
        st.sampled_from(ids["partners"]).map(lambda partner_id: {"partner_id": partner_id}),
        st.sampled_from(["carla@example.com", "ann@acme.example.com", "new@example.com"]).map(
            lambda email: {"email": email}
        ),
        st.sampled_from(["(202) 555-0142", "+1 202 555 0177"]).map(lambda phone: {"phone": phone}),
        st.sampled_from(["CUST-CARLA", "NOPE"]).map(lambda ref: {"customer_ref": ref}),
    )
    identifiers = ["partner_id", "email", "phone", "customer_ref"]

    @st.composite
    def events(draw):
        """A valid event (unknown customers included), then 0 to 3 hostile mutations."""
        event = {name: draw(strategy) for name, strategy in good.items()}
        event.update(draw(good_identifiers))
        if event["channel"] == "web":
            event.update(visitor_id="v1", url="https://shop.example.com/", page="Home")
        for _mutation in range(draw(st.integers(0, 3)) * draw(st.integers(0, 1))):
            kind = draw(st.integers(0, 5))
            if kind == 0:  # a known field, any hostile value
                name = draw(st.sampled_from(sorted(field_values)))
                event[name] = draw(st.one_of(field_values[name], json_values))
            elif kind == 1 and event:  # a missing field
                event.pop(draw(st.sampled_from(sorted(event))))
            elif kind == 2:  # an unknown field
                event[draw(st.text(max_size=12))] = draw(json_values)
            elif kind == 3:  # a second identifier
                name = draw(st.sampled_from(identifiers))
                event[name] = draw(field_values[name])
            elif kind == 4:  # another company, maybe not the user's
                event["company_id"] = draw(field_values["company_id"])
            else:  # not an event at all
                return draw(json_values)
        return event

    def nested(depth):
        return "[" * depth + "]" * depth

    batches = st.lists(events(), max_size=8).map(lambda batch: json.dumps({"events": batch}))
    return st.one_of(
        *[batches] * 8,
        json_values.map(json.dumps),
        st.dictionaries(st.sampled_from(["events", "event", ""]), json_values).map(json.dumps),
        st.binary(max_size=200),
        st.integers(1, 20_000).map(nested),
        st.integers(1, 3000).map(lambda depth: '{"events": ' + nested(depth) + "}"),
        batches.map(lambda body: body[: len(body) // 2]),
        batches.map(
            lambda body: body.replace('"inbound"', "NaN").replace('"outbound"', "-Infinity")
        ),
    )


@tagged("post_install", "-at_install", "ecrm")
@unittest.skipIf(st is None, "hypothesis is not installed (pip install -r tests/requirements.txt)")
class TestEcrmApiFuzz(EcrmApiCommon):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.env["ecrm.api.source"].create(
            [
                {"name": "fuzz-inbox", "company_id": cls.company_a.id},
                {"name": "fuzz-off", "company_id": cls.company_a.id, "active": False},
            ]
        )

    def test_hostile_bodies(self):
        ids = {
            "partners": [self.customer.id, self.ann.id, self.acme.id],
            "other_company_partners": [self.customer_b.id],
            "companies": [self.company_a.id, self.company_b.id, 999_999],
        }
        counts = dict.fromkeys(["requests", "created", "parked", "ok", "refused"], 0)

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(body=_strategies(ids))
        def post(body):
            response = self.opener.post(
                self.base_url() + API_URL,
                data=body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body,
                headers={"Authorization": f"Bearer {self.key}"},
                timeout=60,
            )
            counts["requests"] += 1
            text = response.text
            self.assertLess(response.status_code, 500, text[:500])
            self.assertNotIn("Traceback", text)
            self.assertNotIn('File "', text)
            self.assertEqual(response.headers["Content-Type"], "application/json; charset=utf-8")
            answer = response.json()
            if response.status_code != 200:
                self.assertIn(response.status_code, (400, 403, 411, 413))
                self.assertTrue(answer["message"])
                counts["refused"] += 1
                return
            counts["ok"] += 1
            results = answer["results"]
            try:
                events = json.loads(body)["events"]
            except RecursionError:  # deeper than this (test) thread's stack allows
                events = results
            self.assertEqual([result["index"] for result in results], list(range(len(events))))
            for result in results:
                self.assertIn(result["status"], STATUSES)
                if result["status"] == "error":
                    self.assertTrue(result["message"])
                    self.assertIn("field", result)
            counts["created"] += answer["created"]
            counts["parked"] += answer["parked"]

        post()
        _logger.info("hostile bodies: %s", counts)
        self.env.invalidate_all()
        mine = [("create_uid", "=", self.api_user.id), ("id", ">", self.last_id)]
        self.assertEqual(self.Interaction.search_count(mine), counts["created"])
        self.assertEqual(self.Unmatched.search_count(mine[:1]), counts["parked"])
        self.assertGreaterEqual(counts["requests"], min(EXAMPLES, 2000))
        # the generator reaches every path: refused bodies, written and parked events
        self.assertGreater(counts["refused"], 100)
        self.assertGreater(counts["ok"], 500)
        self.assertGreater(counts["created"], 20)
        self.assertGreater(counts["parked"], 5)
