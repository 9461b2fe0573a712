"""Four real clients push overlapping batches at once to a real Odoo server on loopback.

Afterwards every event is stored exactly once, the interactions are exactly the events
reported ``created``, and the web events make exactly the visits they describe: the
request retries of Odoo (serialization failures at REPEATABLE READ) and the API's
``ON CONFLICT`` and visitor upserts leave no duplicate and no split visit.

tests/run_tests.sh hands over a freshly installed test database in ECRM_API_DB, which
this test copies; without it, this test installs one itself (a few minutes).
"""

import os
import random
import re
import threading
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import psycopg2
import pytest
import requests
from ecrm_api_server import api_database, make_api_key, odoo_server

CLIENTS = 4
BATCH = 50
SOURCE = "concurrency"
WEB_SOURCE = "concurrency-web"
BAD_LOG_LINE = re.compile(r"^\S+ \S+ \d+ (WARNING|ERROR|CRITICAL) ", re.MULTILINE)


@pytest.fixture
def api_db(tmp_path):
    with api_database(tmp_path, "ecrm_api_conc") as db:
        yield db


def _customers(db):
    with psycopg2.connect(dbname=db) as conn, conn.cursor() as cr:
        cr.execute(
            """
            SELECT p.id, p.email_normalized, p.ref
              FROM res_partner p
             WHERE p.ref LIKE 'ECRM%%' AND p.active AND p.company_id IS NULL
               AND p.email_normalized IS NOT NULL
             ORDER BY p.id LIMIT 60
            """
        )
        return cr.fetchall()


def _events(customers):
    """480 calls, chats and emails, and 120 page views making exactly 30 web visits."""
    events = []
    start = datetime(2025, 3, 3, 8, 0)
    for n in range(480):
        partner_id, email, ref = customers[n % len(customers)]
        identifier = [{"partner_id": partner_id}, {"email": email}, {"customer_ref": ref}][n % 3]
        events.append(
            {
                "external_id": f"call-{n}",
                "source": SOURCE,
                "channel": ["phone", "chat", "email"][n % 3],
                "direction": "inbound",
                "occurred_at": (start + timedelta(minutes=7 * n)).isoformat() + "Z",
                **identifier,
            }
        )
    for visit in range(30):  # 10 customers, 3 visits each, 4 page views 5 minutes apart
        partner_id, email, _ref = customers[visit % 10]
        visit_start = start + timedelta(hours=3 * (visit // 10))
        for view in range(4):
            events.append(
                {
                    "external_id": f"view-{visit}-{view}",
                    "source": WEB_SOURCE,
                    "channel": "web",
                    "direction": "inbound",
                    "occurred_at": (visit_start + timedelta(minutes=5 * view)).isoformat() + "Z",
                    "email": email,
                    "visitor_id": f"browser-{partner_id}",
                    "url": f"https://shop.example.com/page/{view}",
                    "page": f"Page {view}",
                }
            )
    return events


def _client_batches(events, client):
    """Client k posts three quarters of the events in its own order: each event is sent
    by three clients, every pair of clients overlaps."""
    mine = [event for index, event in enumerate(events) if index % CLIENTS != client]
    random.Random(client).shuffle(mine)
    return [mine[i : i + BATCH] for i in range(0, len(mine), BATCH)]


def _post(session, url, key, batch, retries):
    for _attempt in range(4):
        response = session.post(
            url, json={"events": batch}, headers={"Authorization": f"Bearer {key}"}, timeout=120
        )
        if response.status_code != 503:  # the documented answer is: send it again
            return response
        retries.append(1)
    return response


def _query(db, query, params=None):
    with psycopg2.connect(dbname=db) as conn, conn.cursor() as cr:
        cr.execute(query, params)
        return cr.fetchall()


def test_parallel_overlapping_batches(api_db, tmp_path):
    log_dir = Path(os.environ.get("ECRM_LOG_DIR") or tmp_path)
    key = make_api_key(api_db, "Concurrency test")
    events = _events(_customers(api_db))
    everyone = [_client_batches(events, client) for client in range(CLIENTS)]
    assert {e["external_id"] for batches in everyone for b in batches for e in b} == {
        e["external_id"] for e in events
    }, "together the clients send every event"

    log = log_dir / "concurrency-server.log"
    answers, failures, retries = [], [], []
    barrier = threading.Barrier(CLIENTS)

    def client(batches, url):
        session = requests.Session()
        barrier.wait()
        for batch in batches:
            response = _post(session, url, key, batch, retries)
            if response.status_code != 200:
                failures.append((response.status_code, response.text[:300]))
                continue
            answers.append((batch, response.json()["results"]))

    # threaded server: the four requests run at once, each in its own transaction;
    # odoo.service.model logs the retries after serialization failures at INFO
    extra = ["--log-handler=odoo.service.model:INFO"]
    with odoo_server(api_db, log, workers=0, extra=extra) as server:
        url = f"{server.url}/ecrm/api/v1/interactions"
        threads = [threading.Thread(target=client, args=(batches, url)) for batches in everyone]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
        assert not any(thread.is_alive() for thread in threads)

    assert not failures, failures
    assert not BAD_LOG_LINE.findall(log.read_text()), f"the server logged errors, see {log}"
    statuses = Counter()
    created = Counter()
    for batch, results in answers:
        assert [r["index"] for r in results] == list(range(len(batch)))
        for event, result in zip(batch, results, strict=True):
            assert result["external_id"] == event["external_id"]
            assert result["status"] in ("created", "merged", "duplicate"), result
            statuses[result["status"]] += 1
            if result["status"] == "created":
                created[event["source"]] += 1

    calls = _query(
        api_db,
        "SELECT external_ref, count(*) FROM ecrm_interaction WHERE source_system = %s "
        "GROUP BY external_ref",
        [SOURCE],
    )
    assert len(calls) == 480, "every call exactly once"
    assert {count for _ref, count in calls} == {1}
    assert created[SOURCE] == 480, "each call reported created by exactly one client"

    views = _query(
        api_db,
        "SELECT external_ref, count(*) FROM ecrm_interaction_event WHERE source_system = %s "
        "GROUP BY external_ref",
        [WEB_SOURCE],
    )
    assert len(views) == 120 and {count for _ref, count in views} == {1}
    visits = _query(
        api_db,
        "SELECT i.id, count(e.id), min(e.occurred_at) = i.date"
        "  FROM ecrm_interaction i JOIN ecrm_interaction_event e ON e.interaction_id = i.id"
        " WHERE i.source_system = %s GROUP BY i.id",
        [WEB_SOURCE],
    )
    assert len(visits) == 30, "four page views make one visit, never two"
    assert {(count, starts) for _id, count, starts in visits} == {(4, True)}
    assert created[WEB_SOURCE] == 30
    assert statuses["duplicate"] > 0, "the clients did overlap"
    server_retries = log.read_text().count("try again in")
    print(  # shown by pytest -s or on failure
        f"{len(answers)} batches, {dict(statuses)}, {server_retries} serialization retries "
        f"in the server, {len(retries)} client retries after 503"
    )
