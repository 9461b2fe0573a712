#!/usr/bin/env python3
"""Benchmark of the ingestion API (issue: channel ingestion API).

Usage::

    python3 tests/bench_api.py --db ecrm_api_bench [--events 100000] [--batch 500] \\
        [--clients 4] [--workers 2] [--baseline 1000] [--customers 2000]

1. Makes sure ``--db`` exists with ``ecrm_addon`` (installed with demo data when
   missing) and holds ``--customers`` bench customers with an email, a valid phone
   and a reference; makes an API user and key through the "Create API Access" wizard,
   and an API key of the admin for the JSON-RPC baseline.
2. Starts ``python3 -m odoo`` on 127.0.0.1 (free port, ``--workers`` processes).
3. Pushes ``--events`` events (calls, chats, emails, SMS and 10% page views grouped
   into visits; customers given by partner id, email, phone or reference in turn) in
   batches of ``--batch`` from ``--clients`` parallel clients, and prints events per
   second and the server's memory (sum over its processes of the peak RSS, and the
   largest RSS sampled during the run).
4. Creates ``--baseline`` of the same events one by one through Odoo's external
   JSON-RPC (``execute_kw`` ``ecrm.interaction`` ``create``, customers already resolved
   by the client, same number of clients), and prints its events per second and the
   ratio.

It prints figures and never asserts timings.
"""

import argparse
import itertools
import json
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import psycopg2
import requests
from ecrm_api_server import install_database, make_api_key, memory_kib, odoo_server, run_script

REPO = Path(__file__).resolve().parent.parent

SETUP = """
import json, sys
from datetime import timedelta
import odoo
from odoo import fields
from odoo.tools import config
config.parse_config(sys.argv[1:])
wanted = WANTED
registry = odoo.modules.registry.Registry(config["db_name"])
with registry.cursor() as cr:
    env = odoo.api.Environment(cr, odoo.SUPERUSER_ID, {})
    Partner = env["res.partner"].with_context(tracking_disable=True)
    have = Partner.search_count([("ref", "=like", "BENCH%")])
    for start in range(have, wanted, 1000):
        Partner.create([
            {
                "name": f"Bench Customer {n}",
                "ref": f"BENCH{n:05d}",
                "email": f"bench{n:05d}@example.com",
                "phone": f"+1 {201 + n // 10000} {200 + n // 100 % 100} "
                f"{n % 100:02d}{n % 7}{n % 3}",
                "customer_rank": 1,
            }
            for n in range(start, min(start + 1000, wanted))
        ])
        cr.commit()
    rows = Partner.search_read(
        [("ref", "=like", "BENCH%"), ("phone_sanitized", "!=", False)],
        ["email_normalized", "phone_sanitized", "ref"], limit=wanted, order="id",
    )
    admin = env.ref("base.user_admin")
    key = env["res.users.apikeys"].with_user(admin)._generate(
        "rpc", "bench baseline", fields.Datetime.now() + timedelta(days=1))
    channels = {c.code: c.id for c in env["ecrm.channel"].search([])}
    cr.commit()
    print(json.dumps({"customers": rows, "admin_key": key, "admin_id": admin.id,
                      "channels": channels}))
"""

CHANNELS = ["phone"] * 3 + ["email"] * 3 + ["chat"] * 2 + ["sms"]  # 90% of the events


def database_exists(db):
    with psycopg2.connect(dbname="postgres") as conn, conn.cursor() as cr:
        cr.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db])
        return bool(cr.fetchone())


class Events:
    """The benchmark's events, made on demand from their number (no list of 100,000)."""

    def __init__(self, run, customers, start):
        self.run = run
        self.customers = customers
        self.start = start

    def identify(self, n, customer):
        kind = n % 4
        if kind == 0:
            return {"partner_id": customer["id"]}
        if kind == 1:
            return {"email": customer["email_normalized"]}
        if kind == 2:
            return {"phone": customer["phone_sanitized"]}
        return {"customer_ref": customer["ref"]}

    def event(self, n):
        if n % 10 == 9:  # a page view: five views of one customer make a visit
            visit = n // 50
            customer = self.customers[(visit * 104729) % len(self.customers)]
            view = (n // 10) % 5
            moment = self.start + timedelta(seconds=17 * 50 * visit + 60 * view)
            return {
                "external_id": f"{self.run}-{n}",
                "source": "bench-web",
                "channel": "web",
                "direction": "inbound",
                "occurred_at": moment.isoformat() + "Z",
                **self.identify(visit, customer),
                "visitor_id": f"browser-{self.run}-{customer['id']}",
                "url": f"https://shop.example.com/products/{view}",
                "page": f"Product page {view}",
                "product": f"Product {n % 97}",
            }
        customer = self.customers[(n * 7919) % len(self.customers)]
        event = {
            "external_id": f"{self.run}-{n}",
            "source": "bench",
            "channel": CHANNELS[n % len(CHANNELS)],
            "direction": "inbound",
            "occurred_at": (self.start + timedelta(seconds=17 * n)).isoformat() + "Z",
            **self.identify(n, customer),
            "subject": f"Contact {n}",
        }
        if n % 600:
            event["duration_seconds"] = n % 600
        return event

    def batch(self, index, size, total):
        return [self.event(n) for n in range(index * size, min((index + 1) * size, total))]


class Sampler(threading.Thread):
    """Samples the server's RSS (sum over its processes) every half second."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.max_kib = 0
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.wait(0.5):
            self.max_kib = max(self.max_kib, memory_kib(self.pid, "VmRSS"))


def push_api(url, key, events, total, size, clients):
    batches = (total + size - 1) // size
    counter = itertools.count()
    statuses = Counter()
    failures = []
    lock = threading.Lock()

    def client():
        session = requests.Session()
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        while (index := next(counter)) < batches:
            body = json.dumps({"events": events.batch(index, size, total)})
            response = session.post(url, data=body, headers=headers, timeout=300)
            with lock:
                if response.status_code != 200:
                    failures.append((response.status_code, response.text[:200]))
                    continue
                answer = response.json()
                for status in ("created", "merged", "duplicate", "parked", "error"):
                    statuses[status] += answer[status]
                if answer["error"] and len(failures) < 5:
                    failures.append(next(r for r in answer["results"] if r["status"] == "error"))

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _i in range(clients)]:
            future.result()
    return time.perf_counter() - started, statuses, failures


def push_jsonrpc(url, db, admin_id, key, events, first, count, clients, customers, channels):
    """The same events created one by one with execute_kw, customers already resolved."""
    by_identifier = {}
    for customer in customers:
        by_identifier["partner_id", customer["id"]] = customer["id"]
        by_identifier["email", customer["email_normalized"]] = customer["id"]
        by_identifier["phone", customer["phone_sanitized"]] = customer["id"]
        by_identifier["customer_ref", customer["ref"]] = customer["id"]
    counter = itertools.count(first)
    failures = []

    def values(event):
        kind = next(k for k in ("partner_id", "email", "phone", "customer_ref") if k in event)
        moment = datetime.fromisoformat(event["occurred_at"]).replace(tzinfo=None)
        return {
            "partner_id": by_identifier[kind, event[kind]],
            "channel_id": channels[event["channel"]],
            "direction": event["direction"],
            "date": moment.isoformat(" ", "seconds"),
            "subject": event.get("subject") or event.get("page"),
            "duration": event.get("duration_seconds", 0) / 3600,
            "capture_mode": "api",
            "source_system": "bench-jsonrpc",
            "external_ref": event["external_id"],
        }

    def client():
        session = requests.Session()
        while (n := next(counter)) < first + count:
            payload = {
                "jsonrpc": "2.0",
                "method": "call",
                "id": n,
                "params": {
                    "service": "object",
                    "method": "execute_kw",
                    "args": [
                        db,
                        admin_id,
                        key,
                        "ecrm.interaction",
                        "create",
                        [values(events.event(n))],
                    ],
                },
            }
            answer = session.post(url, json=payload, timeout=120).json()
            if "error" in answer:
                failures.append(answer["error"]["data"]["message"][:200])

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _i in range(clients)]:
            future.result()
    return time.perf_counter() - started, failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--baseline", type=int, default=1000)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--log", default=str(REPO / ".test-logs" / "bench-api-server.log"))
    args = parser.parse_args()
    Path(args.log).parent.mkdir(parents=True, exist_ok=True)

    if not database_exists(args.db):
        print(f"installing ecrm_addon with demo data into {args.db}...", flush=True)
        install_database(args.db, Path(args.log).with_suffix(".install.log"))
    setup = json.loads(
        run_script(args.db, SETUP.replace("WANTED", str(args.customers))).strip().splitlines()[-1]
    )
    customers = setup["customers"]
    key = make_api_key(args.db, "API bench")
    run = uuid.uuid4().hex[:8]
    events = Events(run, customers, datetime(2025, 1, 1))
    print(
        f"{args.events:,} events in batches of {args.batch} from {args.clients} clients, "
        f"{len(customers):,} customers, server with {args.workers} workers (run {run})",
        flush=True,
    )

    with odoo_server(args.db, args.log, workers=args.workers) as server:
        url = f"{server.url}/ecrm/api/v1/interactions"
        warmup = Events(f"w{run}", customers, datetime(2024, 1, 1))
        push_api(url, key, warmup, 20 * args.workers, 10, args.workers)  # load the registry

        sampler = Sampler(server.process.pid)
        sampler.start()
        seconds, statuses, failures = push_api(
            url, key, events, args.events, args.batch, args.clients
        )
        sampler.stopped.set()
        api_rate = args.events / seconds
        print(f"API: {args.events:,} events in {seconds:.1f} s = {api_rate:,.0f} events/s")
        print(f"     results: {dict(statuses)}")
        if failures:
            print(f"     failures: {failures[:5]}")
        print(
            f"     server memory: peak RSS {server.peak_rss_kib() / 1024:,.0f} MiB "
            f"(sum of the processes' peaks), largest sampled RSS "
            f"{sampler.max_kib / 1024:,.0f} MiB",
            flush=True,
        )

        base_seconds, base_failures = push_jsonrpc(
            f"{server.url}/jsonrpc",
            args.db,
            setup["admin_id"],
            setup["admin_key"],
            Events(f"r{run}", customers, datetime(2025, 1, 1)),
            0,
            args.baseline,
            args.clients,
            customers,
            setup["channels"],
        )
        rpc_rate = args.baseline / base_seconds
        print(
            f"JSON-RPC create one by one: {args.baseline:,} events in {base_seconds:.1f} s "
            f"= {rpc_rate:,.0f} events/s"
        )
        if base_failures:
            print(f"     failures: {base_failures[:3]}")
        print(f"ratio API / JSON-RPC: {api_rate / rpc_rate:,.1f}x")

    with psycopg2.connect(dbname=args.db) as conn, conn.cursor() as cr:
        cr.execute(
            """
            SELECT source_system, count(*) FROM ecrm_interaction
             WHERE source_system IN ('bench', 'bench-web') AND external_ref LIKE %(run)s
             GROUP BY source_system
            """,
            {"run": f"{run}-%"},
        )
        stored = dict(cr.fetchall())
        cr.execute(
            "SELECT count(*) FROM ecrm_interaction_event WHERE external_ref LIKE %s", [f"{run}-%"]
        )
        views = cr.fetchone()[0]
    print(
        f"stored: {stored.get('bench', 0):,} interactions and {stored.get('bench-web', 0):,} "
        f"web visits holding {views:,} page views (reported created {statuses['created']:,}, "
        f"merged {statuses['merged']:,})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
