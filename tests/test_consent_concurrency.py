"""Consent events and unsubscribes sent at the same moment to a real 2-worker Odoo server.

Clients meet at a barrier, then post at once:

- the same consent events from several clients (an outside system retrying, or two of
  its nodes): each event is recorded once, the others answer ``duplicate``, and the
  unrelated events of the same batches are never lost;
- opt-outs of one customer in two companies (API, and RFC 8058 one-click unsubscribes):
  both are recorded, the address stays blacklisted, and a later opt-in in one company
  does not lift it.

A 400 is "do not resend" for the clients (README): none may come from a race.

tests/run_tests.sh hands over a freshly installed test database in ECRM_API_DB, which
this module copies; without it, it installs one itself (a few minutes).
"""

import json
import os
import random
import re
import threading
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg2
import pytest
import requests
from ecrm_api_server import api_database, odoo_server, run_script

CLIENTS = 4
ROUNDS = 5
SHARED = 5
UNSUBSCRIBE_ROUNDS = 8
BAD_LOG_LINE = re.compile(r"^\S+ \S+ \d+ (WARNING|ERROR|CRITICAL) ", re.MULTILINE)
# What a race must never echo: database constraint names, keys, Odoo's IntegrityError text.
DB_INTERNALS = re.compile(r"constraint|duplicate key|already exists|_uniq|unique", re.I)

# Runs in a subprocess: company B, shared customers, an API user of both companies with
# a key, and each customer's preference-centre tokens in both companies, as JSON.
SETUP = """
import json, sys
from datetime import timedelta
import odoo
from odoo import Command, fields
from odoo.tools import config
config.parse_config(sys.argv[1:])
registry = odoo.modules.registry.Registry(config["db_name"])
with registry.cursor() as cr:
    env = odoo.api.Environment(cr, odoo.SUPERUSER_ID, {})
    company_a = env.ref("base.main_company")
    company_b = env["res.company"].create({"name": "Consent race B"})
    user = env["res.users"].create({
        "name": "Consent race API",
        "login": "consent_race_api",
        "groups_id": [Command.set([env.ref("base.group_portal").id,
                                   env.ref("ecrm_addon.group_ecrm_ingest").id])],
        "company_id": company_a.id,
        "company_ids": [Command.set((company_a | company_b).ids)],
    })
    key = env["res.users.apikeys"].with_user(user)._generate(
        "rpc", "race", fields.Datetime.now() + timedelta(hours=12))
    partners = env["res.partner"].create([
        {"name": f"Race customer {n}", "email": f"race{n}@example.com"} for n in range(60)
    ])
    print(json.dumps({
        "key": key,
        "companies": [company_a.id, company_b.id],
        "customers": [
            {"id": p.id, "email": p.email_normalized,
             "tokens": [p._ecrm_preference_token(c) for c in (company_a, company_b)]}
            for p in partners
        ],
    }))
"""


@pytest.fixture(scope="module")
def race(tmp_path_factory):
    """A database, its fixtures (SETUP) and a 2-worker server, shared by the tests."""
    tmp_path = tmp_path_factory.mktemp("consent_race")
    log_dir = Path(os.environ.get("ECRM_LOG_DIR") or tmp_path)
    log = log_dir / "consent-concurrency-server.log"
    log.unlink(missing_ok=True)
    with api_database(tmp_path, "ecrm_consent_race") as db:
        setup = json.loads(run_script(db, SETUP).strip().splitlines()[-1])
        # odoo.service.model logs the retries after serialization failures at INFO
        extra = ["--log-handler=odoo.service.model:INFO"]
        with odoo_server(db, log, workers=2, extra=extra) as server:
            yield {"db": db, "url": server.url, "log": log, **setup}
        assert not BAD_LOG_LINE.findall(log.read_text()), f"the server logged errors: {log}"


def _query(db, query, params=None):
    with psycopg2.connect(dbname=db) as conn, conn.cursor() as cr:
        cr.execute(query, params)
        return cr.fetchall()


def _at_once(requests_to_send):
    """Send each (method, url, kwargs) from its own thread after a barrier."""
    answers = [None] * len(requests_to_send)
    barrier = threading.Barrier(len(requests_to_send))

    def send(index, url, kwargs):
        session = requests.Session()
        barrier.wait()
        for _attempt in range(4):
            response = session.post(url, timeout=120, **kwargs)
            if response.status_code != 503:  # the documented answer is: send it again
                break
        answers[index] = response

    threads = [
        threading.Thread(target=send, args=(index, url, kwargs))
        for index, (url, kwargs) in enumerate(requests_to_send)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads)
    return answers


def _consent(customer, external_id, state, company_id, minutes=0):
    moment = datetime.now(timezone.utc) - timedelta(minutes=60 - minutes)
    return {
        "external_id": external_id,
        "source": "race-shop",
        "channel": "email",
        "state": state,
        "occurred_at": moment.isoformat(),
        "partner_id": customer["id"],
        "company_id": company_id,
    }


def test_same_consent_events_from_four_clients(race):
    """Finding 3: the loser of a race answers ``duplicate``; nothing of its batch is lost."""
    company_a = race["companies"][0]
    customers = race["customers"]
    url = f"{race['url']}/ecrm/api/v1/consents"
    headers = {"Authorization": f"Bearer {race['key']}"}
    failures, statuses = [], Counter()
    for round_ in range(ROUNDS):
        shared = [
            _consent(customers[k], f"shared-{round_}-{k}", ("opt_in", "opt_out")[k % 2], company_a)
            for k in range(SHARED)
        ]
        batches = []
        for client in range(CLIENTS):
            own = _consent(
                customers[SHARED + round_ * CLIENTS + client],
                f"own-{round_}-{client}",
                "opt_out",
                company_a,
            )
            batch = [*shared, own]
            random.Random(round_ * 10 + client).shuffle(batch)
            batches.append(batch)
        answers = _at_once([(url, {"json": {"events": b}, "headers": headers}) for b in batches])
        ids = {}
        for batch, response in zip(batches, answers, strict=True):
            if response.status_code != 200 or DB_INTERNALS.search(response.text):
                failures.append((round_, response.status_code, response.text[:300]))
                continue
            for event, result in zip(batch, response.json()["results"], strict=True):
                assert result["external_id"] == event["external_id"]
                statuses[event["external_id"].split("-")[0], result["status"]] += 1
                assert result["status"] in ("created", "duplicate"), result
                assert ids.setdefault(event["external_id"], result["id"]) == result["id"]
    assert not failures, failures
    assert statuses["shared", "created"] == ROUNDS * SHARED, statuses
    assert statuses["shared", "duplicate"] == ROUNDS * SHARED * (CLIENTS - 1), statuses
    assert statuses["own", "created"] == ROUNDS * CLIENTS, "no unrelated opt-out was lost"
    rows = _query(
        race["db"],
        "SELECT external_ref, count(*) FROM ecrm_consent_event WHERE source_system = %s "
        "GROUP BY external_ref",
        ["race-shop"],
    )
    assert len(rows) == ROUNDS * (SHARED + CLIENTS) and {count for _ref, count in rows} == {1}
    opted_out = _query(
        race["db"],
        "SELECT count(*) FROM ecrm_consent c JOIN ecrm_consent_event e ON e.id = c.last_event_id"
        " WHERE e.external_ref LIKE 'own-%%' AND c.state = 'opt_out'",
    )
    assert opted_out == [(ROUNDS * CLIENTS,)]


def _unsubscribed(db, customer, companies):
    """(companies whose consent is opt_out, blacklist entry active) of ``customer``."""
    states = _query(
        db,
        "SELECT c.company_id FROM ecrm_consent c JOIN ecrm_channel ch ON ch.id = c.channel_id"
        " WHERE c.partner_id = %s AND ch.code = 'email' AND c.state = 'opt_out'",
        [customer["id"]],
    )
    active = _query(
        db, "SELECT bool_or(active) FROM mail_blacklist WHERE email = %s", [customer["email"]]
    )
    return {company for (company,) in states} == set(companies), bool(active[0][0])


def test_opt_outs_in_two_companies_at_once(race):
    """Finding 4: an unsubscribe is never lost, and B's later opt-in never lifts A's."""
    db, companies = race["db"], race["companies"]
    customers = race["customers"][SHARED + ROUNDS * CLIENTS :]
    headers = {"Authorization": f"Bearer {race['key']}"}
    failures = []
    # RFC 8058 one-click unsubscribes: mail providers post once and never resend
    for customer in customers[:UNSUBSCRIBE_ROUNDS]:
        answers = _at_once(
            [
                (
                    f"{race['url']}/ecrm/unsubscribe/{token}",
                    {"data": {"List-Unsubscribe": "One-Click"}},
                )
                for token in customer["tokens"]
            ]
        )
        for response in answers:
            if response.status_code != 200 or "You are unsubscribed" not in response.text:
                failures.append(("one-click", response.status_code, response.text[:300]))
        assert _unsubscribed(db, customer, companies) == (True, True), customer
    # the same through the API, one request per company
    api = customers[UNSUBSCRIBE_ROUNDS : 2 * UNSUBSCRIBE_ROUNDS]
    for round_, customer in enumerate(api):
        answers = _at_once(
            [
                (
                    f"{race['url']}/ecrm/api/v1/consents",
                    {
                        "json": {"events": [_consent(customer, f"out-{round_}-{c}", "opt_out", c)]},
                        "headers": headers,
                    },
                )
                for c in companies
            ]
        )
        for response in answers:
            if response.status_code != 200 or DB_INTERNALS.search(response.text):
                failures.append(("api", response.status_code, response.text[:300]))
            elif response.json()["results"][0]["status"] != "created":
                failures.append(("api", response.json()))
        assert _unsubscribed(db, customer, companies) == (True, True), customer
    assert not failures, failures
    # Company B's later opt-in: company A's opt-out keeps the address blacklisted.
    customer = api[0]
    later = _consent(customer, "in-later", "opt_in", companies[1], minutes=30)
    response = requests.post(
        f"{race['url']}/ecrm/api/v1/consents", json={"events": [later]}, headers=headers, timeout=60
    )
    assert response.json()["results"][0]["status"] == "created", response.text
    blacklisted = _query(
        db, "SELECT active FROM mail_blacklist WHERE email = %s", [customer["email"]]
    )
    assert blacklisted == [(True,)], "company B's opt-in lifted company A's opt-out"
