#!/usr/bin/env python3
"""Benchmark of the customer scoring (issue: analytical e-CRM).

Usage::

    python3 tests/bench_scores.py -d ecrm_bench_scores --customers 100000 --orders 1000000

1. Makes sure the database exists with ``ecrm_addon`` (no demo data) and holds at
   least the requested customers and orders (``tests/generate_data.py``).
2. Floor: the bare PostgreSQL query that aggregates recency, frequency and monetary
   value per customer over ``sale_order`` with 1 GB of ``work_mem``, in two forms:
   the monetary value summed as stored (numeric) and as float8 (faster); the floor is
   the faster one, best of 3.
3. Full recompute: a full ``ecrm.score.run`` for the main company, executed step by
   step as the scheduler does (one commit per step), timed end to end. The first run
   may insert the scores. Then ``--rounds`` nightly runs update them, run k as of k
   days later (every recency and prediction moves, the models are refitted), each one
   right after one more floor measurement (best of 2). The machine's speed drifts by
   tens of percent within minutes: the ratios are given best to best and median to
   median, both measured the same way, side by side, and as the median of each
   night's ratio to the floor measured just before it (paired: least moved by the
   drift). Beside each night and its floor: the CPU time the virtual machine's host
   took meanwhile (steal), the main cause of that drift.
   A bare rewrite of every score row (one column, rolled back) is timed too: the
   part of the nightly cost that any design storing daily-moving scores pays.
4. Incremental: after a vacuum of the scores (the rewrite above left a dead version
   of each), ``--rounds`` times, another 1% of the customers get a new confirmed
   order (copied in SQL from one of their orders, dated now), then an incremental run
   is timed; the median is compared with the median nightly full run.
5. Prints the figures, the ratios and the peak memory (max RSS) of this process,
   which is the Odoo process doing the work. Never asserts timings.
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import psycopg2

REPO = Path(__file__).resolve().parent.parent


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-d", "--database", default="ecrm_bench_scores")
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3, help="nightly runs timed")
    parser.add_argument("--addons-path", default=None)
    return parser.parse_args()


def addons_path(args):
    import odoo  # noqa: PLC0415

    return args.addons_path or f"{Path(odoo.__file__).parent / 'addons'},{REPO}"


def query(db, statement, params=None, fetch=True):
    with psycopg2.connect(dbname=db) as conn, conn.cursor() as cr:
        cr.execute(statement, params)
        return cr.fetchall() if fetch else cr.rowcount


def vacuum(db, table):
    """VACUUM, then CHECKPOINT as happens between the day's autovacuum and the night: the
    next write of each page logs it whole again (full-page images), as in production."""
    conn = psycopg2.connect(dbname=db)
    try:
        conn.autocommit = True  # VACUUM runs outside of a transaction
        with conn.cursor() as cr:
            cr.execute(f'VACUUM "{table}"')
            cr.execute("CHECKPOINT")
    finally:
        conn.close()


def prepare(args):
    with psycopg2.connect(dbname="postgres") as conn, conn.cursor() as cr:
        cr.execute("SELECT 1 FROM pg_database WHERE datname = %s", [args.database])
        exists = bool(cr.fetchone())
    if not exists:
        print(f"installing ecrm_addon into {args.database}...", flush=True)
        subprocess.run(
            [
                sys.executable, "-m", "odoo", "-d", args.database, "-i", "ecrm_addon",
                "--without-demo=all", f"--addons-path={addons_path(args)}",
                "--stop-after-init", "--log-level=warn",
            ],
            check=True,
        )  # fmt: skip
    customers, orders = query(
        args.database,
        "SELECT (SELECT count(*) FROM res_partner WHERE customer_rank > 0), "
        "(SELECT count(*) FROM sale_order WHERE state = 'sale')",
    )[0]
    if customers < args.customers or orders < args.orders:
        print("generating data...", flush=True)
        subprocess.run(
            [
                sys.executable, str(REPO / "tests" / "generate_data.py"), "-d", args.database,
                "--customers", str(args.customers - customers),
                "--orders", str(max(args.orders - orders, args.customers - customers)),
                f"--addons-path={addons_path(args)}",
            ],
            check=True,
        )  # fmt: skip
    return query(
        args.database,
        "SELECT (SELECT count(*) FROM res_partner WHERE customer_rank > 0), "
        "(SELECT count(*) FROM sale_order WHERE state = 'sale' AND company_id = 1)",
    )[0]


# The floor in its two forms: the monetary value summed as stored (numeric) and as
# float8, which aggregates faster (by-value sums: smaller hash tables). The floor is
# the faster of the two, each time.
FLOORS = {
    "numeric": "sum(amount_untaxed)",
    "float8": "sum(amount_untaxed::float8)",
}
FLOOR = """
    SELECT partner_id, now()::date - max(date_order)::date AS recency, count(*) AS frequency,
           {monetary} AS monetary
      FROM sale_order
     WHERE company_id = 1 AND state = 'sale'
  GROUP BY partner_id
"""


def time_floor(db, tries=3):
    """The best time of each form of the floor over ``tries``: {form: seconds}."""
    times = {}
    with psycopg2.connect(dbname=db) as conn, conn.cursor() as cr:
        cr.execute("SET work_mem = '1GB'")
        for _ in range(tries):
            for form, monetary in FLOORS.items():
                floor = FLOOR.format(monetary=monetary)
                start = time.perf_counter()
                # Summing each column makes PostgreSQL compute it: with count(*) alone it
                # drops the unused aggregates and only groups (measured: 30% less time).
                cr.execute(
                    f"SELECT count(*), sum(recency), sum(frequency), sum(monetary) FROM ({floor}) f"  # noqa: S608 - constant
                )
                cr.fetchall()
                elapsed = time.perf_counter() - start
                times[form] = min(times.get(form, elapsed), elapsed)
    return times


def time_rewrite(db, tries=2):
    """Best time of a bare rewrite of every score row of the company (one column
    changed, rolled back), after a vacuum like the nightly runs: what any design that
    stores scores which move every day pays on top of the aggregate."""
    best = None
    for _ in range(tries):
        vacuum(db, "ecrm_customer_score")
        with psycopg2.connect(dbname=db) as conn, conn.cursor() as cr:
            start = time.perf_counter()
            cr.execute(
                "UPDATE ecrm_customer_score SET recency_days = recency_days + 1"
                " WHERE company_id = 1"
            )
            elapsed = time.perf_counter() - start
            conn.rollback()
        best = elapsed if best is None else min(best, elapsed)
    return best


def cpu_steal():
    """CPU seconds taken by the virtual machine's host so far (``steal`` of
    /proc/stat, all CPUs), or None where the system does not tell. On a shared host it
    runs to a second per nightly run, and it is what makes the figures drift: printed
    beside them, measured over the floor and over the run."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def steal_between(before, after):
    if before is None or after is None:
        return ""
    return f"; host steal {after - before:.2f} s"


def describe(floors):
    return ", ".join(f"{form} {seconds:.2f} s" for form, seconds in floors.items())


def run_scoring(db, run_type, batch_size, days_later=0):
    """Execute one run to the end, committing after each step like the scheduler.

    ``days_later``: the run's reference date is that many days after now, as the
    nightly run of that later day (recency and every prediction move).
    """
    import odoo  # noqa: PLC0415
    from odoo.modules.registry import Registry  # noqa: PLC0415

    registry = Registry(db)
    start = time.perf_counter()
    with registry.cursor() as cr:
        env = odoo.api.Environment(cr, odoo.SUPERUSER_ID, {})
        reference_date = odoo.fields.Datetime.now() + timedelta(days=days_later)
        run = env["ecrm.score.run"]._queue_run(
            env.ref("base.main_company"), run_type, reference_date=reference_date
        )
        cr.commit()
        steps, by_step = 0, {}
        while run.state in ("queued", "running"):
            step = run.step or "aggregate"
            step_start = time.perf_counter()
            run._execute_step(batch_size=batch_size)
            cr.commit()
            by_step[step] = by_step.get(step, 0.0) + time.perf_counter() - step_start
            steps += 1
        elapsed = time.perf_counter() - start
        split = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in by_step.items())
        return elapsed, steps, run.customers_scored, run.model_fitted, run.message or "", split


def add_new_orders(db, group=7):
    """Give 1% of the customers (those whose hashed id falls in ``group`` of 100) a new
    confirmed order dated now (SQL copy). The hash is signed: its remainder runs from
    -99 to 99, hence ``abs`` (without it a group was 0.5% of the customers)."""
    columns = [
        row[0]
        for row in query(
            db,
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'sale_order' "
            "AND column_name NOT IN ('id', 'name', 'date_order', 'create_date', 'write_date')",
        )
    ]
    cols = ", ".join(f'"{name}"' for name in columns)
    return query(
        db,
        f"""
        INSERT INTO sale_order ({cols}, name, date_order, create_date, write_date)
        SELECT {cols}, o.name || '-B', now() at time zone 'UTC', now() at time zone 'UTC',
               now() at time zone 'UTC'
          FROM sale_order o
         WHERE o.id IN (
               SELECT max(id) FROM sale_order
                WHERE company_id = 1 AND state = 'sale'
             GROUP BY partner_id
               HAVING abs(hashint4(partner_id) %% 100) = %s)
        """,  # noqa: S608 - column names come from the catalog
        [group],
        fetch=False,
    )


def main():
    args = parse_args()
    import odoo  # noqa: PLC0415

    odoo.tools.config.parse_config([f"--addons-path={addons_path(args)}", "--log-level=warn"])
    customers, orders = prepare(args)
    query(args.database, "ANALYZE sale_order", fetch=False)
    print(f"\ndatabase {args.database}: {customers:,} customers, {orders:,} confirmed orders")
    floors = time_floor(args.database)
    print(f"floor: bare RFM aggregate, best of 3 (work_mem 1GB): {describe(floors)}")
    floor_times = [min(floors.values())]
    full, steps, scored, fitted, message, split = run_scoring(
        args.database, "full", args.batch_size
    )
    print(
        f"full recompute (first): {scored:,} customers in {steps} steps  {full:8.2f} s"
        f"   model fitted: {fitted} {message}\n    steps: {split}"
    )
    # The first full run after new data may insert the scores; the nightly runs after
    # it update them: those are compared. Run k is the run of the k-th next night: every
    # customer's recency and predictions move, and the models are refitted.
    nightly, paired = [], []
    for night in range(1, args.rounds + 1):
        # Between two nights autovacuum cleans the score table the previous run rewrote
        # (1,000,000 dead row versions trigger it at once), so that the next run's
        # updates find room in their own pages. Done here, not timed.
        vacuum(args.database, "ecrm_customer_score")
        steal = [cpu_steal()]
        floors = time_floor(args.database, tries=2)
        steal.append(cpu_steal())
        floor_times.append(min(floors.values()))
        full, steps, scored, fitted, message, split = run_scoring(
            args.database, "full", args.batch_size, days_later=night
        )
        steal.append(cpu_steal())
        nightly.append(full)
        paired.append(full / floor_times[-1])
        print(
            f"full recompute (night {night}): {scored:,} customers  {full:8.2f} s"
            f"{steal_between(steal[1], steal[2])}"
            f"   ratio {paired[-1]:5.2f} to the floor just before ({describe(floors)}"
            f"{steal_between(steal[0], steal[1])} over 4 queries)\n    steps: {split}"
        )
    best_floor, best_full = min(floor_times), min(nightly)
    median_floor, median_full = statistics.median(floor_times), statistics.median(nightly)
    print(
        f"full recompute, nightly: best {best_full:.2f} s / best floor {best_floor:.2f} s"
        f" = {best_full / best_floor:.2f}; median {median_full:.2f} s / median floor"
        f" {median_floor:.2f} s = {median_full / median_floor:.2f}"
        f" ({len(nightly)} runs, {len(floor_times)} floors); median of each night's ratio to"
        f" the floor just before it {statistics.median(paired):.2f}"
    )
    rewrite = time_rewrite(args.database)
    print(
        f"bare rewrite of every score row (one column, best of 2): {rewrite:.2f} s ="
        f" {rewrite / median_floor:.2f}x the median floor: the aggregate plus this rewrite"
        f" alone come to {(median_floor + rewrite) / median_floor:.2f}x"
    )
    # The rewrite, rolled back, left a dead version of every score: vacuumed as
    # autovacuum does after a nightly run, before the day's incremental runs (else the
    # first one pays for cleaning the pages it reads).
    vacuum(args.database, "ecrm_customer_score")
    # Incremental runs, each after another 1% of the customers got a new order.
    incrementals = []
    for index in range(args.rounds):
        added = add_new_orders(args.database, group=7 + index)
        # Runs look for orders created since the previous run started, to the second
        # (Odoo's datetimes): orders created in the second a run started are rescored by
        # the next run too. Here the next orders come right after a run of 0.1 s; wait
        # for the next second, so that each run rescores the 1% it is about.
        time.sleep(1.1)
        incremental, steps, scored, _fitted, _message, split = run_scoring(
            args.database, "incremental", args.batch_size
        )
        incrementals.append(incremental)
        print(
            f"incremental after {added:,} new orders: {scored:,} customers  {incremental:8.2f} s"
            f"\n    steps: {split}"
        )
    median_incremental = statistics.median(incrementals)
    print(
        f"incremental, median of {len(incrementals)}: {median_incremental:.2f} s ="
        f" {100 * median_incremental / median_full:.1f}% of the median nightly full run"
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (max RSS) of the Odoo process: {peak:,.0f} MiB")


if __name__ == "__main__":
    main()
