#!/usr/bin/env python3
"""Benchmark of the interaction log (issue: operational e-CRM).

Usage::

    python3 tests/bench_interactions.py --db ecrm_bench --db-without ecrm_bench_base \\
        [--interactions 10000000] [--customers 100000] [--rounds 4] [--capture-only]

1. Makes sure both databases exist: ``--db`` with ``ecrm_addon``, ``--db-without``
   with the same Odoo apps but without ``ecrm_addon`` (both without demo data,
   installed here when missing). Both get ``--customers`` customers and ten orders
   each from ``tests/generate_data.py`` (same seed: the same customers and orders)
   when they have fewer customers, so that the two databases differ by
   ``ecrm_addon`` and its interactions only.
2. Fills ``--db`` up to ``--interactions`` interactions, set-based
   (``INSERT ... SELECT`` from ``generate_series``, one million rows per
   transaction), with a skewed spread over the customers and one customer holding
   exactly 10,000 interactions, then vacuums the table as autovacuum would.
3. Times, as an e-CRM user with record rules, the customer timeline as the form
   view reads it (``web_read`` of the interactions page, 20 per page) and the
   customer form's figures, cold cache, and prints p50/p95 next to the bare SQL
   query of the same page (the floor).
4. Times confirming 1,000 orders one by one and posting 1,000 chatter emails to
   customers, in both databases alternately, each round in a transaction that is
   rolled back after the work commit does first (``cr.flush()``: pending writes and
   precommit hooks such as mail tracking), and prints the medians and their ratio
   (with / without). Both databases are vacuumed first (rolled-back rounds leave dead
   rows), and the order alternates from round to round.

It prints figures and never asserts timings.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import psycopg2

REPO = Path(__file__).resolve().parent.parent
BASE_APPS = "sale_management,mass_mailing,mass_mailing_sms,loyalty"
HEAVY_COUNT = 10_000
TIMELINE_SPEC = {
    "ecrm_timeline_ids": {
        "fields": {
            "date": {},
            "direction": {},
            "subject": {},
            "outcome": {},
            "channel_icon": {},
            "source_ref": {},
            "channel_id": {"fields": {"display_name": {}}},
            "partner_id": {"fields": {"display_name": {}}},
            "user_id": {"fields": {"display_name": {}}},
        },
        "limit": 20,
        "order": "date desc, id desc",
    }
}
FIGURES = [
    "ecrm_interaction_count",
    "ecrm_last_contact_date",
    "ecrm_days_since_contact",
    "ecrm_interaction_count_recent",
    "ecrm_preferred_channel_id",
]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="ecrm_bench", help="database with ecrm_addon")
    parser.add_argument("--db-without", default="ecrm_bench_base", help="database without it")
    parser.add_argument("--interactions", type=int, default=10_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="rounds of the capture overhead (even: see time_capture)",
    )
    parser.add_argument("--samples", type=int, default=200, help="timed reads per figure")
    parser.add_argument("--orders", type=int, default=1000, help="orders and emails per round")
    parser.add_argument("--addons-path", default=None)
    parser.add_argument(
        "--capture-only", action="store_true", help="skip the reads, time the capture only"
    )
    return parser.parse_args()


def addons_path(args):
    import odoo  # noqa: PLC0415 - only after the arguments are read

    return args.addons_path or f"{Path(odoo.__file__).parent / 'addons'},{REPO}"


def db_exists(name):
    with psycopg2.connect(dbname="postgres") as conn, conn.cursor() as cr:
        cr.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        return bool(cr.fetchone())


def install(args, db, apps):
    print(f"installing {apps} into {db} (no demo data)...", flush=True)
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable, "-m", "odoo", "-d", db, "-i", apps, "--without-demo=all",
            f"--addons-path={addons_path(args)}", "--stop-after-init", "--log-level=warn",
        ],
        check=True,
    )  # fmt: skip
    print(f"  installed in {time.perf_counter() - start:.0f}s")


def query(db, statement, params=None):
    with psycopg2.connect(dbname=db) as conn, conn.cursor() as cr:
        cr.execute(statement, params)
        return cr.fetchall()


def prepare(args):
    if not db_exists(args.db):
        install(args, args.db, "ecrm_addon")
    if not db_exists(args.db_without):
        install(args, args.db_without, BASE_APPS)
    for db in (args.db, args.db_without):
        generate_customers(args, db)
    fill_interactions(args)


def generate_customers(args, db):
    customers = query(db, "SELECT count(*) FROM res_partner WHERE customer_rank > 0")[0][0]
    if customers < args.customers:
        missing = args.customers - customers
        print(f"generating {missing} customers with 10 orders each in {db}...", flush=True)
        subprocess.run(
            [
                sys.executable, str(REPO / "tests" / "generate_data.py"), "-d", db,
                "--customers", str(missing), "--orders", str(missing * 10),
                f"--addons-path={addons_path(args)}",
            ],
            check=True,
        )  # fmt: skip


def fill_interactions(args):
    have = query(args.db, "SELECT count(*) FROM ecrm_interaction")[0][0]
    if have >= args.interactions:
        print(f"{args.db} already holds {have} interactions")
        return
    print(f"inserting {args.interactions - have} interactions...", flush=True)
    start = time.perf_counter()
    with psycopg2.connect(dbname=args.db) as conn:
        with conn.cursor() as cr:
            cr.execute(
                "CREATE TEMP TABLE bench_customer ON COMMIT PRESERVE ROWS AS "
                "SELECT row_number() OVER (ORDER BY id) AS rank, id FROM res_partner "
                "WHERE customer_rank > 0 AND id = commercial_partner_id AND active"
            )
            cr.execute("SELECT count(*), min(id) FROM bench_customer")
            customers, heavy = cr.fetchone()
            cr.execute("SELECT array_agg(id ORDER BY id) FROM ecrm_channel WHERE active")
            channels = cr.fetchone()[0]
            cr.execute("SELECT id FROM res_users WHERE login = 'admin'")
            admin = cr.fetchone()[0]
            cr.execute(
                "SELECT count(*) FROM ecrm_interaction WHERE commercial_partner_id = %s", [heavy]
            )
            heavy_missing = max(HEAVY_COUNT - cr.fetchone()[0], 0)
        conn.commit()
        todo = args.interactions - have
        done = 0
        while done < todo:
            size = min(1_000_000, todo - done)
            # The first batch gives the heavy customer its 10,000 interactions; the others
            # are spread with a skew (power law on the customer's rank).
            with conn.cursor() as cr:
                cr.execute("SET LOCAL work_mem = '256MB'")
                cr.execute(
                    """
                    INSERT INTO ecrm_interaction (
                        partner_id, commercial_partner_id, channel_id, direction, date,
                        subject, user_id, company_id, capture_mode, create_uid, create_date,
                        write_uid, write_date)
                    SELECT coalesce(s.forced, c.id), coalesce(s.forced, c.id),
                           (%(channels)s::int[])[1 + (s.g::bigint * 7919 %% %(nchannels)s)::int],
                           CASE WHEN s.g %% 3 = 0 THEN 'inbound' ELSE 'outbound' END,
                           now() at time zone 'utc' - make_interval(secs => s.age),
                           'Benchmark interaction', %(admin)s, 1, 'api',
                           %(admin)s, now() at time zone 'utc', %(admin)s, now() at time zone 'utc'
                      FROM (
                        SELECT g, random() * 94608000 AS age,
                               CASE WHEN g <= %(heavy_missing)s THEN %(heavy)s END AS forced,
                               1 + floor(%(customers)s * power(random(), 1.6))::int AS rank
                          FROM generate_series(1, %(size)s) g) s
                      JOIN bench_customer c ON c.rank = s.rank
                    """,
                    {
                        "channels": channels,
                        "nchannels": len(channels),
                        "admin": admin,
                        "heavy": heavy,
                        "heavy_missing": heavy_missing if done == 0 else 0,
                        "customers": customers,
                        "size": size,
                    },
                )
            conn.commit()
            done += size
            rate = done / (time.perf_counter() - start)
            print(f"  {have + done:>11,} interactions ({rate:,.0f} rows/s)", flush=True)
        conn.autocommit = True
        with conn.cursor() as cr:
            # As autovacuum keeps a table that grows by inserts (visibility map set), and
            # so that it does not start vacuuming it in the middle of the timings.
            cr.execute("VACUUM (ANALYZE) ecrm_interaction")
    print(f"  filled in {time.perf_counter() - start:.0f}s")


def percentile(values, pct):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def summary(label, seconds):
    ms = [value * 1000 for value in seconds]
    print(
        f"  {label:<52} p50 {percentile(ms, 50):7.2f} ms   p95 {percentile(ms, 95):7.2f} ms"
        f"   max {max(ms):7.2f} ms"
    )


@contextmanager
def odoo_env(db, uid):
    import odoo  # noqa: PLC0415
    from odoo.modules.registry import Registry  # noqa: PLC0415

    registry = Registry(db)
    with registry.cursor() as cr:
        env = odoo.api.Environment(cr, uid, {})
        try:
            yield env
        finally:
            cr.rollback()


def time_reads(args):
    heavy = query(
        args.db,
        "SELECT commercial_partner_id FROM ecrm_interaction GROUP BY 1 ORDER BY count(*) DESC "
        "LIMIT 1",
    )[0][0]
    typical = query(
        args.db,
        "SELECT commercial_partner_id, count(*) FROM ecrm_interaction GROUP BY 1 "
        "ORDER BY count(*) DESC OFFSET (SELECT count(DISTINCT commercial_partner_id) / 2 "
        "FROM ecrm_interaction) LIMIT 1",
    )[0]
    total = query(args.db, "SELECT count(*) FROM ecrm_interaction")[0][0]
    heavy_count = query(
        args.db, "SELECT count(*) FROM ecrm_interaction WHERE commercial_partner_id = %s", [heavy]
    )[0][0]
    print(
        f"\nreads on {total:,} interactions: heavy customer {heavy} ({heavy_count:,} "
        f"interactions), median customer {typical[0]} ({typical[1]:,})"
    )
    with odoo_env(args.db, uid=2) as env:  # admin: an e-CRM user with record rules
        env.company.ecrm_capture_email  # noqa: B018 - warm the registry
        for label, partner_id in (("heavy", heavy), ("median", typical[0])):
            partner = env["res.partner"].browse(partner_id)
            timeline, figures, floor = [], [], []
            for _ in range(args.samples):
                env.invalidate_all()
                start = time.perf_counter()
                partner.web_read(TIMELINE_SPEC)
                timeline.append(time.perf_counter() - start)
                env.invalidate_all()
                start = time.perf_counter()
                partner.read(FIGURES)
                figures.append(time.perf_counter() - start)
                start = time.perf_counter()
                env.cr.execute(
                    "SELECT id, date, direction, subject, outcome, channel_id, partner_id, "
                    "user_id FROM ecrm_interaction WHERE commercial_partner_id = %s "
                    "AND company_id = %s ORDER BY date DESC, id DESC LIMIT 20",
                    [partner_id, env.company.id],
                )
                env.cr.fetchall()
                floor.append(time.perf_counter() - start)
            summary(f"timeline page, web_read ({label} customer)", timeline)
            summary(f"customer form figures ({label} customer)", figures)
            summary(f"floor: bare SQL of the page ({label} customer)", floor)


CAPTURE_TABLES = (
    "res_partner",
    "sale_order",
    "sale_order_line",
    "mail_message",
    "mail_followers",
    "mail_notification",
    "mail_tracking_value",
    "mail_mail",
)


def vacuum(db, tables):
    conn = psycopg2.connect(dbname=db)
    try:
        conn.autocommit = True  # VACUUM runs outside of a transaction
        with conn.cursor() as cr:
            for table in tables:
                cr.execute(f'VACUUM (ANALYZE) "{table}"')
            cr.execute("SELECT to_regclass('ecrm_interaction')")
            if cr.fetchone()[0]:
                cr.execute("VACUUM (ANALYZE) ecrm_interaction")
    finally:
        conn.close()


def capture_round(db, count):
    """Seconds to confirm ``count`` orders one by one and post ``count`` emails."""
    from odoo import Command  # noqa: PLC0415

    with odoo_env(db, uid=2) as base_env:
        env = base_env(context={"mail_notify_force_send": False})
        product = env["product.product"].create({"name": "Bench product", "list_price": 10})
        partners = env["res.partner"].create(
            [
                {"name": f"Bench customer {i}", "email": f"bench{i}@example.com"}
                for i in range(count)
            ]
        )
        orders = env["sale.order"].create(
            [
                {
                    "partner_id": partner.id,
                    "order_line": [
                        Command.create({"product_id": product.id, "product_uom_qty": 1})
                    ],
                }
                for partner in partners
            ]
        )
        # cr.flush() is what commit runs first: pending writes and the precommit hooks
        # (mail tracking, captured interactions), so that each timing holds all its work.
        env.cr.flush()
        start = time.perf_counter()
        for order in orders:
            order.action_confirm()
        env.cr.flush()
        confirm = time.perf_counter() - start
        start = time.perf_counter()
        for order in orders:
            order.message_post(
                body="<p>Your order is on its way.</p>",
                subject="Delivery",
                message_type="comment",
                subtype_xmlid="mail.mt_comment",
                partner_ids=order.partner_id.ids,
            )
        env.cr.flush()
        post = time.perf_counter() - start
        return confirm, post


def time_capture(args):
    print(
        f"\ncapture overhead: {args.orders} orders confirmed one by one and {args.orders} "
        f"chatter emails, {args.rounds} rounds, alternating databases"
    )
    results = {args.db: [], args.db_without: []}
    # Rolled-back rounds leave dead rows behind (earlier runs too): both databases start
    # clean, as autovacuum keeps them, so that neither pays for the other's history.
    for db in (args.db, args.db_without):
        vacuum(db, CAPTURE_TABLES)
    capture_round(args.db, 20)  # warm both registries
    capture_round(args.db_without, 20)
    for index in range(args.rounds):
        # ABBA order: neither database always runs first (or with the warmer cache).
        order = (args.db, args.db_without) if index % 2 == 0 else (args.db_without, args.db)
        for db in order:
            confirm, post = capture_round(db, args.orders)
            results[db].append((confirm, post))
            print(f"  round {index + 1} {db:<20} confirm {confirm:6.2f}s   post {post:6.2f}s")
    with_ecrm = results[args.db]
    without = results[args.db_without]
    # The database timed first in a round is slower (measured: up to 1.5 times for the
    # emails, whichever it is): with an even number of rounds each database is first
    # as often as second, and the means compare like with like.
    if args.rounds % 2:
        print("  (odd number of rounds: one database ran first once more than the other)")
    for position, label in ((0, "confirm 1,000 orders"), (1, "post 1,000 chatter emails")):
        for name, average in (("mean", statistics.mean), ("median", statistics.median)):
            a = average(row[position] for row in with_ecrm)
            b = average(row[position] for row in without)
            print(
                f"  {label:<28} {name:<6} with ecrm_addon {a:6.2f}s   without {b:6.2f}s"
                f"   ratio {a / b:5.3f}"
            )


def main():
    args = parse_args()
    os.environ.setdefault("PGAPPNAME", "ecrm-bench")
    import odoo  # noqa: PLC0415

    odoo.tools.config.parse_config([f"--addons-path={addons_path(args)}", "--log-level=warn"])
    prepare(args)
    if not args.capture_only:
        time_reads(args)
    time_capture(args)


if __name__ == "__main__":
    main()
