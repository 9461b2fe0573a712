#!/usr/bin/env python3
"""Fill an Odoo 18 database with benchmark customers and confirmed sale orders, fast.

Usage::

    python3 tests/generate_data.py -d DBNAME --customers 100000 --orders 1000000 \\
        [--seed 42] [--companies all|ID,ID] [--years 3] [--addons-path PATH]

The database must exist and have ``sale`` installed (``sale_management`` is the
usual choice).  The script appends N customers (``res.partner`` with
``customer_rank = 1``, about a quarter of them companies) and exactly M confirmed
sale orders (``state = 'sale'``) with their order lines.

Generative model (printed at the end so that a model-fitting test can compare):

* BG/NBD purchase process.  Customer *i* is "born" uniformly over the last
  ``--years`` years and places its first order at birth.  While alive it buys
  following a Poisson process of rate ``lambda_i ~ Gamma(shape=r, rate=alpha)``
  (time unit: days); after each repeat purchase it drops out with probability
  ``p_i ~ Beta(a, b)``.  ``alpha`` is solved so that the expected number of
  orders equals M (plus a small margin); the small excess is then removed by
  uniform random thinning of repeat orders so that exactly M orders are written
  (thinning a Poisson process keeps it Poisson; the printed thinning fraction
  tells how much the effective rate differs from ``lambda``).
* Gamma-Gamma spend.  Each customer's spend rate ``nu_i ~ Gamma(shape=q,
  rate=v)``; every order value ``z ~ Gamma(shape=p, rate=nu_i)``, so the mean
  order value of a customer is ``p / nu_i``.  The value is converted to the
  company currency, split over 1 + Poisson(lines-1) lines (``--lines-per-order``,
  default 1.3: about 3/4 of the orders have a single line) and rounded, so the
  stored totals are within rounding of the drawn value and exactly equal to the
  sum of the lines.

Customers are split over the selected companies (``--companies``, default the
main company 1; ``all`` = every company): each buys from one company, 10% buy
from two (then their partner is shared, ``company_id`` NULL); other partners
belong to their company for half of them (20% with a single company).  Orders
are in the company currency; values are converted from the first company's
currency with the current rate.

Everything random is drawn with numpy from ``--seed`` (vectorised, no Python
loop per customer or order): the same seed and ``--end`` give the same data on any
database (only ids and order numbers depend on the current sequence values).

How rows are written:

* Products: 50 products ``ECRM-GEN-001..050`` (no taxes, invoiced on order) are
  created once through the ORM if missing; lines use them with Zipf-like weights.
* Probes.  The script first creates, through the ORM and inside a savepoint that
  is rolled back, a company and a person partner per customer country and, per
  selected company, a confirmed order with one line per benchmark product, and
  keeps their raw rows.  Every column that does not depend on the generated data
  (``lang``, ``invoice_warn``, ``require_signature``, ``prepayment_percent``,
  ``qty_delivered_method``, ``customer_lead``, line ``name``, ``product_uom``,
  ``currency_id``, ``pricelist_id``, ...) is copied from those ORM-written rows;
  the data-dependent columns (names, partners, dates, users, amounts, ...) are
  computed in SQL the way the ORM computes them.  Columns added by other modules
  therefore also get the value the ORM would write.
* No taxes: the generated lines have no ``tax_id`` (the benchmark products are
  created without taxes), hence ``amount_tax = 0``, ``price_total =
  price_subtotal`` and the order totals are exactly the sum of the lines.
  Discounts are 0; nothing is delivered or invoiced yet (``invoice_status =
  'to invoice'``).
* Not generated: chatter messages and followers, invoices, pickings, analytic
  lines, access tokens (NULL, created lazily by Odoo).
* Set based: the orders are simulated window by window (30 days) in date order
  and customers are sharded over ``--workers`` PostgreSQL connections (default 2,
  one per core), each with one transaction.  A worker COPYs a chunk
  (``--chunk-size`` orders; binary COPY built from numpy arrays) into temporary
  staging tables, then runs ``INSERT ... SELECT`` into ``res_partner`` (the
  customers of the chunk not inserted yet), ``sale_order`` and
  ``sale_order_line``.
* Foreign keys.  When the role may (superuser), the workers load with
  ``SET LOCAL session_replication_role = replica``: PostgreSQL then skips the
  per-row foreign key triggers (9 lookups per order and per line, most of the
  cost otherwise).  Before committing, each worker checks every foreign key of
  the three tables (all of them, read from ``pg_constraint``) on its new rows
  (``id`` above the maximum before the load: its transaction sees only its own
  new rows, which reference committed rows and its own): it copies their key
  columns to a narrow temporary table and ANALYZEs it (the target tables'
  statistics date from before the load: with them the planner picked per-row
  nested loops, over 10 minutes at 10M orders), then anti-joins each key that
  is set in some new row with its referenced table (nested loops disabled); the
  whole load rolls back if any row is orphaned.  Replica mode would also skip
  ordinary triggers, so it is refused when the target tables have any trigger
  besides the internal foreign key ones; without the privilege, or with
  ``--keep-fk-triggers``, the triggers stay on.
* Indexes.  When the load adds more than 30% to a table's rows, its secondary
  indexes that the loaded rows feed (not unique, not backing a constraint; a
  partial B-tree only if its predicate holds for an ORM probe row; e.g. the GIN
  trigram index on ``sale_order.name``) are dropped before the load and rebuilt
  from their saved ``pg_get_indexdef`` afterwards (``maintenance_work_mem`` 1
  GB, the indexes spread over ``--workers`` sessions): a bulk build costs far
  less than maintaining the index row by row.  The loaders' transactions cannot
  share a DDL lock, so the drop is committed first and the rebuild runs in a
  ``finally`` block, after the load committed or rolled back, also on Ctrl-C
  and SIGTERM.  Unique and constraint indexes are never dropped.  The
  definitions are also written to a temporary ``.sql`` file (removed once
  rebuilt), to recreate them by hand if the process is killed in between.
  ``--keep-indexes`` keeps every index.
* Parallelism.  Two INSERTs into the same table barely run faster than one (the
  GIN trigram index on ``sale_order.name``, when kept, serialises them
  completely), two INSERTs into different tables run side by side at full
  speed: so a worker inserts into whichever table no other worker is using
  (lines first; only lines are shared when nothing else is free), and staging
  is multi-buffered so that it can insert the orders of its next chunks while
  the other worker inserts lines.
  Ids come from the tables' own id sequences (``nextval`` as the column default
  would do), so no ``setval`` is needed.  The workers commit together at the
  end; on error all roll back.  Memory is bounded by the customer arrays (~100
  bytes per customer) plus a few chunks.
* Order names are taken from the company's ``sale.order`` ``ir.sequence``
  (company specific first, then shared, like ``next_by_code``), in
  ``date_order`` order; the numbers are reserved up front (``nextval`` +
  ``setval`` for 'standard', ``number_next`` for 'no_gap', per date range when
  ``use_date_range``) so that later ORM orders continue after them.
* Afterwards the touched tables are ANALYZEd and the ORM re-reads a sample of
  orders, recomputes their stored computed fields and compares, and creates and
  confirms a new order (all rolled back).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import queue
import resource
import signal
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np

try:
    from odoo import SUPERUSER_ID, Command, api
    from odoo.modules.registry import Registry
    from odoo.sql_db import db_connect
    from odoo.tools import SQL, config
except ImportError as _exc:  # pragma: no cover - environment problem
    sys.exit(f"error: cannot import odoo ({_exc}); run this with the Python that has Odoo 18")
from psycopg2 import errors as pg_errors
from psycopg2.extras import Json

PG_EPOCH = 946684800  # 2000-01-01T00:00:00Z, origin of PostgreSQL binary timestamps
WINDOW_DAYS = 30.0  # simulation time step
PRODUCT_CODE = "ECRM-GEN-%03d"
N_PRODUCTS = 50
COMPANY_SHARE = 0.25  # share of customers that are companies
PHONE_SHARE = 0.6  # share of customers with a phone number
SHARED_SHARE = 0.10  # multi-company: share of customers buying from two companies
SECOND_COMPANY_SHARE = 0.3  # share of a shared customer's orders in its second company
QTY_EXTRA = 0.4  # line quantity is 1 + Poisson(QTY_EXTRA)
CALIBRATION_ATTEMPTS = 12
LOAD_PHASE = "load partners + orders + lines (parallel)"
BULK_SHARE = 0.3  # rebuild a table's secondary indexes when the load adds more rows than this

FIRST_NAMES = (
    "Emma",
    "Liam",
    "Olivia",
    "Noah",
    "Ava",
    "Lucas",
    "Mia",
    "Louis",
    "Sofia",
    "Hugo",
    "Lea",
    "Jules",
    "Chloe",
    "Adam",
    "Lina",
    "Arthur",
    "Julia",
    "Gabriel",
    "Nora",
    "Leo",
    "Alice",
    "Victor",
    "Sarah",
    "Elias",
    "Anna",
    "Felix",
    "Laura",
    "Oscar",
    "Marie",
    "Paul",
    "Clara",
    "Max",
    "Ines",
    "Tom",
    "Eva",
    "Samuel",
    "Lisa",
    "David",
    "Zoe",
    "Daniel",
    "Hannah",
    "Ethan",
    "Amelia",
    "Jack",
    "Grace",
    "Henry",
    "Isla",
    "Oliver",
    "Ruby",
    "James",
    "Sophie",
    "Thomas",
    "Charlotte",
    "Matteo",
    "Giulia",
    "Pablo",
    "Lucia",
    "Jan",
    "Femke",
    "Sem",
)
LAST_NAMES = (
    "Smith",
    "Johnson",
    "Brown",
    "Garcia",
    "Miller",
    "Martin",
    "Bernard",
    "Dubois",
    "Thomas",
    "Robert",
    "Richard",
    "Petit",
    "Durand",
    "Leroy",
    "Moreau",
    "Simon",
    "Laurent",
    "Lefebvre",
    "Michel",
    "Peeters",
    "Janssens",
    "Maes",
    "Jacobs",
    "Mertens",
    "Willems",
    "Claes",
    "Goossens",
    "Muller",
    "Schmidt",
    "Schneider",
    "Fischer",
    "Weber",
    "Meyer",
    "Wagner",
    "Becker",
    "Schulz",
    "Hoffmann",
    "Rossi",
    "Russo",
    "Ferrari",
    "Esposito",
    "Bianchi",
    "Romano",
    "Colombo",
    "Jansen",
    "DeVries",
    "VanDijk",
    "Bakker",
    "Visser",
    "Smit",
    "Meijer",
    "Lopez",
    "Gonzalez",
    "Perez",
    "Sanchez",
    "Wilson",
    "Taylor",
    "Clarke",
    "Walker",
    "Wright",
)
COMPANY_WORDS = (
    "Alpine",
    "Blue",
    "Bright",
    "Cedar",
    "Coastal",
    "Crystal",
    "Delta",
    "Eagle",
    "Evergreen",
    "Falcon",
    "Golden",
    "Granite",
    "Harbor",
    "Horizon",
    "Iron",
    "Lakeside",
    "Maple",
    "Meridian",
    "Nordic",
    "Oak",
    "Pacific",
    "Pioneer",
    "Prairie",
    "Quantum",
    "Redwood",
    "River",
    "Silver",
    "Summit",
    "Sun",
    "Vertex",
)
COMPANY_KINDS = (
    "Trading",
    "Logistics",
    "Systems",
    "Foods",
    "Textiles",
    "Consulting",
    "Motors",
    "Retail",
    "Labs",
    "Media",
    "Builders",
    "Energy",
    "Outfitters",
    "Supplies",
    "Works",
)
COMPANY_SUFFIXES = ("Ltd", "Inc", "GmbH", "SA", "BV", "LLC", "SRL", "NV", "Group", "& Co")
EMAIL_DOMAINS = ("example.com", "example.net", "example.org")
# country code -> (mobile national-number prefix, national number length); numbers built
# from these are valid for libphonenumber, so Odoo's phone_sanitized is the E.164 form.
PHONE_PLANS = {
    "US": ("2015550", 10),
    "GB": ("7400", 10),
    "DE": ("1512", 11),
    "FR": ("612", 9),
    "BE": ("470", 9),
    "NL": ("612", 9),
    "ES": ("612", 9),
    "IT": ("312", 10),
    "CA": ("5065550", 10),
    "AU": ("412", 9),
}
CUSTOMER_COUNTRIES = tuple(PHONE_PLANS)
PRODUCT_ADJECTIVES = ("Classic", "Premium", "Compact", "Deluxe", "Eco")
PRODUCT_NOUNS = (
    "Widget",
    "Gadget",
    "Bottle",
    "Lamp",
    "Chair",
    "Backpack",
    "Notebook",
    "Headset",
    "Kettle",
    "Cable",
)


class GenerationError(Exception):
    """A problem that stops the generation with a clear message."""


# --------------------------------------------------------------------------- CLI / phases


def parse_args(argv=None):
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description="Fill an Odoo 18 database with benchmark customers and confirmed orders.",
    )
    parser.add_argument("-d", "--database", required=True, help="existing Odoo database")
    parser.add_argument("--customers", type=int, required=True, help="customers to create")
    parser.add_argument("--orders", type=int, required=True, help="confirmed orders to create")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    parser.add_argument(
        "--companies",
        default="1",
        help="'all' or comma separated res.company ids (default: 1, the main company)",
    )
    parser.add_argument("--years", type=float, default=3.0, help="history length in years")
    parser.add_argument(
        "--end",
        type=datetime.fromisoformat,
        help="end of the history, UTC, e.g. 2026-01-01T00:00:00 (default: now); with --seed "
        "it makes the dates reproducible too",
    )
    parser.add_argument(
        "--lines-per-order",
        type=float,
        default=1.3,
        help="mean number of lines per order (1 + Poisson), default 1.3",
    )
    parser.add_argument("--workers", type=int, default=2, help="parallel DB connections")
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=50_000,
        help="orders per COPY/INSERT chunk",
    )
    parser.add_argument(
        "--keep-indexes",
        action="store_true",
        help="maintain every index row by row instead of rebuilding the secondary indexes of "
        "the tables that the load makes much bigger",
    )
    parser.add_argument(
        "--keep-fk-triggers",
        action="store_true",
        help="keep PostgreSQL's per-row foreign key triggers (default: skip them when "
        "superuser and check every foreign key set-based before commit)",
    )
    parser.add_argument("--sample", type=int, default=200, help="orders checked with the ORM")
    parser.add_argument("--r", type=float, default=0.75, help="BG/NBD r (rate shape)")
    parser.add_argument("--a", type=float, default=1.0, help="BG/NBD a (dropout Beta a)")
    parser.add_argument("--b", type=float, default=5.0, help="BG/NBD b (dropout Beta b)")
    parser.add_argument("--gg-p", type=float, default=6.0, help="Gamma-Gamma p (spend shape)")
    parser.add_argument("--gg-q", type=float, default=4.0, help="Gamma-Gamma q")
    parser.add_argument("--gg-v", type=float, default=60.0, help="Gamma-Gamma v (gamma)")
    parser.add_argument("--addons-path", help="Odoo addons path (default: Odoo's)")
    parser.add_argument("-c", "--config", help="Odoo configuration file")
    parser.add_argument("--log-level", default="warn", help="Odoo log level (default warn)")
    args = parser.parse_args(argv)
    if args.customers < 1:
        parser.error("--customers must be >= 1")
    if args.orders < args.customers:
        parser.error("--orders must be >= --customers (every customer has a first order)")
    if args.years <= 0 or args.lines_per_order < 1 or args.workers < 1 or args.chunk_size < 1:
        parser.error("--years > 0, --lines-per-order >= 1, --workers >= 1, --chunk-size >= 1")
    for name in ("r", "a", "b", "gg_p", "gg_q", "gg_v"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0")
    return args


class Phases:
    """Measure and print the wall time of the script's phases."""

    def __init__(self):
        self.start = time.perf_counter()
        self.rows = []

    @contextlib.contextmanager
    def __call__(self, label):
        """Time the enclosed block as phase ``label``."""
        t0 = time.perf_counter()
        print(f"[{time.perf_counter() - self.start:7.1f}s] {label} ...", flush=True)
        yield
        took = time.perf_counter() - t0
        self.rows.append((label, took))
        print(f"[{time.perf_counter() - self.start:7.1f}s] {label}: {took:.1f}s", flush=True)

    def total(self):
        """Seconds since the start of the script."""
        return time.perf_counter() - self.start


# --------------------------------------------------------------------------- connection


def init_odoo(args):
    """Initialise Odoo's configuration (database, addons path, logging)."""
    odoo_args = ["-d", args.database, f"--log-level={args.log_level}"]
    if args.config:
        odoo_args += ["-c", args.config]
    if args.addons_path:
        odoo_args.append(f"--addons-path={args.addons_path}")
    config.parse_config(odoo_args, setup_logging=True)


def check_database(dbname):
    """Fail with a clear message unless ``dbname`` is an Odoo database with sale installed."""
    with contextlib.closing(db_connect("postgres").cursor()) as cr:
        cr.execute(SQL("SELECT 1 FROM pg_database WHERE datname = %s", dbname))
        if not cr.fetchone():
            raise GenerationError(
                f"database {dbname!r} does not exist; create it first, e.g. "
                f"python3 -m odoo -d {dbname} -i sale_management --stop-after-init",
            )
    with contextlib.closing(db_connect(dbname).cursor()) as cr:
        cr.execute(SQL("SELECT to_regclass('ir_module_module') IS NOT NULL"))
        if not cr.fetchone()[0]:
            raise GenerationError(f"database {dbname!r} is not an Odoo database")
        cr.execute(SQL("SELECT state FROM ir_module_module WHERE name = 'sale'"))
        row = cr.fetchone()
        if not row or row[0] != "installed":
            raise GenerationError(
                f"module 'sale' is not installed in {dbname!r}; install it first, e.g. "
                f"python3 -m odoo -d {dbname} -i sale_management --stop-after-init",
            )


def open_cursor(dbname):
    """A new Odoo cursor on its own PostgreSQL connection."""
    return db_connect(dbname).cursor()


# --------------------------------------------------------------------------- metadata


@dataclass
class CompanyInfo:
    """What the generator needs to know about one selected company."""

    id: int
    name: str
    currency_id: int
    currency: str
    dp: int  # currency decimal places
    minor_exp: int  # amounts are drawn in units of 10**-minor_exp
    fx: float  # main company currency -> this company currency
    validity_days: int
    users: list
    teams: list
    locked: list
    name_keys: list  # name key per date range (or a single one)
    range_starts: np.ndarray | None  # datetime64[D] starts of the date ranges


@dataclass
class NameKey:
    """One source of order numbers: a sequence, or one date range of a sequence."""

    seq_id: int
    range_id: int | None
    implementation: str
    increment: int
    padding: int
    prefix: str
    suffix: str
    label: str = ""


@dataclass
class Meta:
    """Everything read from the database before generating."""

    now: datetime
    admin_uid: int
    price_dp: int
    uom_dp: int
    companies: list
    product_ids: np.ndarray
    product_weights: np.ndarray
    country_ids: np.ndarray
    country_weights: np.ndarray
    phone_cc: list
    phone_prefix: list
    phone_var_len: list
    phone_sanitized: list
    name_keys: list
    probes: dict
    columns: dict


def resolve_companies(env, spec):
    """The res.company records selected by ``--companies``."""
    Company = env["res.company"]
    if spec.strip().lower() == "all":
        return Company.search([], order="id")
    try:
        ids = [int(part) for part in spec.split(",") if part.strip()]
    except ValueError as exc:
        raise GenerationError(f"--companies: expected 'all' or ids, got {spec!r}") from exc
    companies = Company.browse(ids).exists()
    missing = set(ids) - set(companies.ids)
    if missing or not ids:
        raise GenerationError(f"--companies: no res.company with id(s) {sorted(missing)}")
    return companies


def ensure_products(env):
    """Return the benchmark products, creating the missing ones through the ORM (no taxes)."""
    Product = env["product.product"].with_context(active_test=False)
    codes = [PRODUCT_CODE % i for i in range(1, N_PRODUCTS + 1)]
    existing = set(Product.search([("default_code", "in", codes)]).mapped("default_code"))
    vals_list = []
    for i, code in enumerate(codes, start=1):
        if code in existing:
            continue
        adjective = PRODUCT_ADJECTIVES[i % len(PRODUCT_ADJECTIVES)]
        noun = PRODUCT_NOUNS[(i // len(PRODUCT_ADJECTIVES)) % len(PRODUCT_NOUNS)]
        vals_list.append(
            {
                "name": f"{adjective} {noun} {i:02d}",
                "default_code": code,
                "list_price": round(4.99 + (i * 37) % 180, 2),
                "sale_ok": True,
                "type": "service" if i % 5 == 0 else "consu",
                "invoice_policy": "order",
                "taxes_id": [Command.clear()],
                "supplier_taxes_id": [Command.clear()],
                "company_id": False,
            }
        )
    if vals_list:
        Product.create(vals_list)
    products = Product.search(
        [("default_code", "in", codes), ("active", "=", True), ("sale_ok", "=", True)],
        order="default_code",
    )
    if len(products) != N_PRODUCTS:
        raise GenerationError(f"expected {N_PRODUCTS} active saleable {PRODUCT_CODE} products")
    return products


def salespeople(env, company, admin):
    """Internal users that can sell for ``company``, their default team and lock setting."""
    users = (
        env["res.users"]
        .search(
            [("share", "=", False), ("company_ids", "in", company.id)],
            order="id",
        )
        .filtered(lambda u: u.has_group("sales_team.group_sale_salesman"))
        or admin
    )
    Team = env["crm.team"].with_company(company)
    domain = Team._check_company_domain(company)
    teams, locked = [], []
    for user in users:
        teams.append(Team._get_default_team_id(user_id=user.id, domain=domain).id or 0)
        locked.append(bool(user.has_group("sale.group_auto_done_setting")))
    return users.ids, teams, locked


def sale_sequence(env, company):
    """The ir.sequence that ``next_by_code('sale.order')`` would use for ``company``."""
    seq = env["ir.sequence"].search(
        [("code", "=", "sale.order"), ("company_id", "in", [company.id, False])],
        order="company_id",
        limit=1,
    )
    if not seq:
        raise GenerationError(f"no 'sale.order' ir.sequence for company {company.name!r}")
    return seq


def date_ranges(env, seq, first_day, last_day):
    """Date ranges of ``seq`` covering [first_day, last_day], created like the ORM does."""
    ranges = []
    day = first_day
    DateRange = env["ir.sequence.date_range"]
    while day <= last_day:
        found = DateRange.search(
            [("sequence_id", "=", seq.id), ("date_from", "<=", day), ("date_to", ">=", day)],
            limit=1,
        ) or seq._create_date_range_seq(day)
        ranges.append(found)
        day = found.date_to + timedelta(days=1)
    return ranges


def build_name_keys(env, companies, start, now):
    """Name keys (sequence or date range) per company; shared sequences share keys."""
    keys, by_seq, per_company = [], {}, {}
    for company in companies:
        seq = sale_sequence(env, company)
        if seq.id not in by_seq:
            if seq.use_date_range:
                ranges = date_ranges(env, seq, start.date(), now.date())
            else:
                ranges = [None]
            idx, starts = [], []
            for rng in ranges:
                ctx_seq = seq.with_context(ir_sequence_date_range=rng.date_from) if rng else seq
                prefix, suffix = ctx_seq._get_prefix_suffix()
                idx.append(len(keys))
                keys.append(
                    NameKey(
                        seq_id=seq.id,
                        range_id=rng.id if rng else None,
                        implementation=seq.implementation,
                        increment=seq.number_increment,
                        padding=seq.padding,
                        prefix=prefix,
                        suffix=suffix,
                        label=f"{seq.name} (ir.sequence {seq.id}, {seq.implementation}"
                        + (f", range {rng.date_from}" if rng else "")
                        + ")",
                    )
                )
                if rng:
                    starts.append(np.datetime64(rng.date_from, "D"))
            by_seq[seq.id] = (idx, np.array(starts, dtype="datetime64[D]") if starts else None)
        per_company[company.id] = by_seq[seq.id]
    return keys, per_company


def phone_plans(env, countries):
    """Phone number building blocks per country, checked against the ORM's sanitizer."""
    Partner = env["res.partner"]
    has_sanitized = "phone_sanitized" in Partner._fields
    cc, prefix, var_len, sanitized = [], [], [], []
    for country in countries:
        nsn_prefix, length = PHONE_PLANS[country.code]
        sample_nsn = nsn_prefix + "7" * (length - len(nsn_prefix))
        phone = f"+{country.phone_code} {sample_nsn}"
        ok = False
        if has_sanitized:
            probe = Partner.new({"name": "x", "phone": phone, "country_id": country.id})
            ok = probe.phone_sanitized == f"+{country.phone_code}{sample_nsn}"
        cc.append(str(country.phone_code))
        prefix.append(nsn_prefix)
        var_len.append(length - len(nsn_prefix))
        sanitized.append(ok)
    return cc, prefix, var_len, sanitized


def fetch_rows(cr, table, ids):
    """Raw rows of ``table`` as dicts (to_jsonb), in id order."""
    cr.execute(
        SQL(
            "SELECT to_jsonb(t) FROM %s t WHERE t.id = ANY(%s) ORDER BY t.id",
            SQL.identifier(table),
            list(ids),
        )
    )
    return [row[0] for row in cr.fetchall()]


def build_probes(env, companies, products, admin_uid, country_ids, country_codes):
    """Create with the ORM a company and a person partner per customer country and one
    confirmed order per company (one line per product), keep their raw rows, and roll
    everything back."""
    cr = env.cr
    probes = {}
    with contextlib.closing(cr.savepoint()):
        Partner = env["res.partner"].with_user(admin_uid).sudo()
        partners = Partner.create(
            [
                {
                    "name": f"Probe {code}",
                    "is_company": is_company,
                    "email": "probe@example.com",
                    "country_id": country_id,
                    "customer_rank": 1,
                }
                for country_id, code in zip(country_ids, country_codes, strict=True)
                for is_company in (True, False)
            ]
        )
        orders = env["sale.order"]
        for company in companies:
            SaleOrder = env["sale.order"].with_user(company.users[0]).sudo()
            order = SaleOrder.with_company(company.id).create(
                {
                    "name": "GEN-PROBE",
                    "partner_id": partners[0].id,
                    "company_id": company.id,
                    "order_line": [
                        Command.create({"product_id": pid, "product_uom_qty": 1})
                        for pid in products.ids
                    ],
                }
            )
            order.action_confirm()
            orders |= order
        env.flush_all()
        probes["res_partner"] = fetch_rows(cr, "res_partner", partners.ids)
        probes["sale_order"] = fetch_rows(cr, "sale_order", orders.ids)
        probes["sale_order_line"] = fetch_rows(cr, "sale_order_line", orders.order_line.ids)
        taxed = orders.order_line.filtered("tax_id")
        if taxed:
            raise GenerationError(f"benchmark products unexpectedly have taxes: {taxed.ids}")
    return probes


def table_columns(cr, table):
    """Column names of ``table`` in their physical order."""
    cr.execute(
        SQL(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
            table,
        )
    )
    return [row[0] for row in cr.fetchall()]


def currency_factor(env, main, company, today):
    """Conversion rate from the main company's currency to ``company``'s currency."""
    if main.currency_id == company.currency_id:
        return 1.0
    return env["res.currency"]._get_conversion_rate(
        main.currency_id,
        company.currency_id,
        company,
        today,
    )


def collect_metadata(registry, args, now):
    """Read (and where needed create through the ORM) everything the generator needs."""
    start = now - timedelta(days=365.25 * args.years)
    with registry.cursor() as cr:
        env = api.Environment(cr, SUPERUSER_ID, {})
        records = resolve_companies(env, args.companies)
        products = ensure_products(env)
        cr.commit()
        admin = env.ref("base.user_admin", raise_if_not_found=False) or env.user
        dp = env["decimal.precision"]
        price_dp = dp.precision_get("Product Price")
        uom_dp = dp.precision_get("Product Unit of Measure")
        keys, seq_by_company = build_name_keys(env, records, start, now)
        cr.commit()
        companies = []
        for company in records:
            users, teams, locked = salespeople(env, company, admin)
            currency = company.currency_id
            key_idx, range_starts = seq_by_company[company.id]
            companies.append(
                CompanyInfo(
                    id=company.id,
                    name=company.name,
                    currency_id=currency.id,
                    currency=currency.name,
                    dp=currency.decimal_places,
                    minor_exp=min(currency.decimal_places, price_dp),
                    fx=currency_factor(env, records[0], company, now.date()),
                    validity_days=company.quotation_validity_days or 0,
                    users=users,
                    teams=teams,
                    locked=locked,
                    name_keys=key_idx,
                    range_starts=range_starts,
                )
            )
        countries = env["res.country"].search([("code", "in", CUSTOMER_COUNTRIES)], order="id")
        main_country = records[0].country_id.code
        weights = np.array(
            [6.0 if c.code == main_country else 1.0 for c in countries],
            dtype=float,
        )
        cc, prefix, var_len, sanitized = phone_plans(env, countries)
        probes = build_probes(
            env, companies, products, admin.id, countries.ids, countries.mapped("code")
        )
        columns = {
            t: table_columns(cr, t) for t in ("res_partner", "sale_order", "sale_order_line")
        }
        ranks = np.arange(1, len(products) + 1, dtype=float)
        product_weights = ranks**-0.8
        return Meta(
            now=now,
            admin_uid=admin.id,
            price_dp=price_dp,
            uom_dp=uom_dp,
            companies=companies,
            product_ids=np.array(products.ids, dtype=np.int32),
            product_weights=product_weights / product_weights.sum(),
            country_ids=np.array(countries.ids, dtype=np.int32),
            country_weights=weights / weights.sum(),
            phone_cc=cc,
            phone_prefix=prefix,
            phone_var_len=var_len,
            phone_sanitized=sanitized,
            name_keys=keys,
            probes=probes,
            columns=columns,
        )


# --------------------------------------------------------------------------- simulation


@dataclass
class Population:
    """Customer level draws and the calibrated BG/NBD process."""

    span: float  # days of history
    edges: np.ndarray  # simulation window edges (days since start)
    birth: np.ndarray
    g: np.ndarray  # Gamma(r, 1) draws; lambda = g / alpha (purchases per day)
    p: np.ndarray
    budget: np.ndarray  # repeat purchases until dropout (Geometric(p))
    nu: np.ndarray
    is_company: np.ndarray
    names: np.ndarray  # (3, N) int16 indices into the name word lists
    country_idx: np.ndarray
    has_phone: np.ndarray
    phone_var: np.ndarray
    comp1: np.ndarray
    comp2: np.ndarray  # -1 when the customer buys from one company only
    partner_company: np.ndarray  # res.company id or 0 (shared partner)
    rep_key: np.ndarray
    alpha: float = math.inf
    attempt: int = 0
    repeats_per_window: np.ndarray = None
    thin_quota: np.ndarray = None
    drawn_orders: int = 0
    params: dict = field(default_factory=dict)


def seed_rng(seed, *path):
    """A numpy Generator for one named random stream (deterministic in ``seed``)."""
    return np.random.default_rng(np.random.SeedSequence([seed, *path]))


def draw_customers(args, meta, span):
    """Vectorised customer level draws (birth, BG/NBD and Gamma-Gamma parameters, identity)."""
    n = args.customers
    rng = seed_rng(args.seed, 0)
    birth = np.sort(rng.uniform(0.0, span, n))
    g = rng.gamma(args.r, 1.0, n)
    p = np.clip(rng.beta(args.a, args.b, n), 1e-12, 1.0)
    budget = rng.geometric(p).astype(np.int64)
    nu = rng.gamma(args.gg_q, 1.0 / args.gg_v, n)
    is_company = rng.random(n) < COMPANY_SHARE
    names = np.vstack(
        [
            np.where(
                is_company,
                rng.integers(0, len(COMPANY_WORDS), n),
                rng.integers(0, len(FIRST_NAMES), n),
            ),
            np.where(
                is_company,
                rng.integers(0, len(COMPANY_KINDS), n),
                rng.integers(0, len(LAST_NAMES), n),
            ),
            np.where(
                is_company,
                rng.integers(0, len(COMPANY_SUFFIXES), n),
                rng.integers(0, len(EMAIL_DOMAINS), n),
            ),
        ]
    ).astype(np.int16)
    country_idx = rng.choice(len(meta.country_ids), n, p=meta.country_weights).astype(np.int16)
    has_phone = rng.random(n) < PHONE_SHARE
    var_len = np.array(meta.phone_var_len)[country_idx]
    phone_var = np.floor(rng.random(n) * 10.0**var_len).astype(np.int64)
    comp1, comp2, partner_company = assign_companies(rng, meta, n)
    pop = Population(
        span=span,
        edges=np.linspace(0.0, span, max(1, math.ceil(span / WINDOW_DAYS)) + 1),
        birth=birth,
        g=g,
        p=p,
        budget=budget,
        nu=nu,
        is_company=is_company,
        names=names,
        country_idx=country_idx,
        has_phone=has_phone,
        phone_var=phone_var,
        comp1=comp1,
        comp2=comp2,
        partner_company=partner_company,
        rep_key=rng.integers(0, 2**31 - 1, n),
    )
    return pop


def assign_companies(rng, meta, n):
    """Each customer's company, second company (shared customers) and partner company_id."""
    n_comp = len(meta.companies)
    ids = np.array([c.id for c in meta.companies], dtype=np.int32)
    comp1 = rng.integers(0, n_comp, n).astype(np.int16)
    if n_comp > 1:
        shared = rng.random(n) < SHARED_SHARE
        other = (comp1 + rng.integers(1, n_comp, n)) % n_comp
        comp2 = np.where(shared, other, -1).astype(np.int16)
        own = ~shared & (rng.random(n) < 0.5)
    else:
        comp2 = np.full(n, -1, dtype=np.int16)
        own = rng.random(n) < 0.2
    partner_company = np.where(own, ids[comp1], 0).astype(np.int32)
    return comp1, comp2, partner_company


def expected_repeats(g, p, t_alive, alpha):
    """Expected BG/NBD repeat purchases, E[X(T)] = (1 - exp(-lambda p T)) / p, summed."""
    return float(np.sum(-np.expm1(-(g / alpha) * p * t_alive) / p))


def solve_alpha(g, p, t_alive, target, guess=None):
    """The Gamma rate ``alpha`` for which the expected repeat purchases equal ``target``
    (bisection in log space; the expectation decreases with alpha)."""
    if target <= 0:
        return math.inf

    def excess(alpha):
        return expected_repeats(g, p, t_alive, alpha) - target

    lo, hi = (guess / 4.0, guess * 4.0) if guess else (1e-3, 1e3)
    while excess(lo) < 0:
        lo /= 16.0
        if lo < 1e-12:
            raise GenerationError(
                "cannot reach that many orders per customer with these dropout parameters; "
                "lower --orders or raise --a / lower --b"
            )
    while excess(hi) > 0:
        hi *= 16.0
    while hi / lo > 1 + 1e-9:
        mid = math.sqrt(lo * hi)
        if excess(mid) > 0:
            lo = mid
        else:
            hi = mid
    return math.sqrt(lo * hi)


def repeat_counts(pop, seed):
    """Yield, per window, the customers that may buy, their Poisson draws and the repeat
    purchases they actually make before dropping out (same draws on every call)."""
    lam = pop.g / pop.alpha if math.isfinite(pop.alpha) else np.zeros_like(pop.g)
    remaining = pop.budget.copy()
    for w in range(len(pop.edges) - 1):
        lo, hi = pop.edges[w], pop.edges[w + 1]
        rng = seed_rng(seed, 1, pop.attempt, w)
        active = np.flatnonzero((pop.birth < hi) & (remaining > 0))
        dur = hi - np.maximum(lo, pop.birth[active])
        drawn = rng.poisson(lam[active] * dur)
        take = np.minimum(drawn, remaining[active])
        remaining[active] -= take
        yield w, active, drawn, take


def calibrate(pop, args):
    """Solve alpha, simulate the counts and set the thinning quotas for exactly M orders.

    The expectation is exact given the customer draws, but the realised total of the
    Poisson/geometric draws varies (a lot for few customers, heavy tails): several
    attempts (independent streams, slowly rising target) are simulated and the one
    needing the least thinning is kept; it stops at an excess below 0.3%.
    """
    n = args.customers
    need = args.orders - n
    t_alive = pop.span - pop.birth
    goal = need + math.ceil(0.001 * need + math.sqrt(need)) if need else 0
    tolerance = max(math.ceil(0.003 * need), 5)
    best = None
    alpha = None
    for attempt in range(CALIBRATION_ATTEMPTS):
        alpha = solve_alpha(pop.g, pop.p, t_alive, goal * (1.0 + 0.004 * attempt), alpha)
        pop.alpha, pop.attempt = alpha, attempt
        per_window = np.array(
            [take.sum() for *_, take in repeat_counts(pop, args.seed)], dtype=np.int64
        )
        total = int(per_window.sum())
        if total >= need and (best is None or total < best[2]):
            best = (alpha, attempt, total, per_window)
        if need <= total <= need + tolerance:
            break
    if best is None:
        raise GenerationError("could not calibrate the purchase rate; check the parameters")
    alpha, pop.attempt, _total, per_window = best
    pop.alpha = alpha
    excess = int(per_window.sum() - need)
    quota = np.zeros_like(per_window)
    if excess:
        quota = seed_rng(args.seed, 3).multivariate_hypergeometric(
            per_window,
            excess,
            method="marginals",
        )
    pop.repeats_per_window, pop.thin_quota = per_window, quota
    pop.drawn_orders = int(n + per_window.sum())
    pop.params = {
        "r": args.r,
        "alpha_days": alpha,
        "alpha_weeks": alpha / 7.0,
        "a": args.a,
        "b": args.b,
        "p": args.gg_p,
        "q": args.gg_q,
        "v": args.gg_v,
        "thinned": excess,
        "thinning_fraction": excess / max(1, per_window.sum()),
        "attempts": pop.attempt + 1,
    }


# --------------------------------------------------------------------------- order generation


@dataclass
class Chunk:
    """Orders (sorted by date) and their lines, ready to be staged by a worker."""

    cust: np.ndarray
    company_id: np.ndarray
    user_id: np.ndarray
    team_id: np.ndarray
    locked: np.ndarray
    ts: np.ndarray  # seconds since the unix epoch
    vdays: np.ndarray
    amount: np.ndarray  # in 10**-e units
    e: np.ndarray
    dp: np.ndarray
    name_key: np.ndarray
    name_num: np.ndarray
    line_order: np.ndarray  # index of the line's order in this chunk
    line_product: np.ndarray
    line_qty: np.ndarray
    line_price: np.ndarray  # unit price in 10**-e units

    def take(self, mask):
        """The sub-chunk of the orders selected by ``mask`` (with their lines)."""
        idx = np.flatnonzero(mask)
        remap = np.full(len(mask), -1, dtype=np.int64)
        remap[idx] = np.arange(len(idx))
        line_mask = mask[self.line_order]
        order_fields = (
            "cust",
            "company_id",
            "user_id",
            "team_id",
            "locked",
            "ts",
            "vdays",
            "amount",
            "e",
            "dp",
            "name_key",
            "name_num",
        )
        kwargs = {f: getattr(self, f)[idx] for f in order_fields}
        kwargs["line_order"] = remap[self.line_order[line_mask]]
        for f in ("line_product", "line_qty", "line_price"):
            kwargs[f] = getattr(self, f)[line_mask]
        return Chunk(**kwargs)

    @staticmethod
    def concat(chunks):
        """Concatenate chunks (line order indices are shifted)."""
        if len(chunks) == 1:
            return chunks[0]
        kwargs = {}
        for name in Chunk.__dataclass_fields__:
            parts = [getattr(c, name) for c in chunks]
            if name == "line_order":
                offsets = np.cumsum([0] + [len(c.cust) for c in chunks[:-1]])
                parts = [part + off for part, off in zip(parts, offsets, strict=True)]
            kwargs[name] = np.concatenate(parts)
        return Chunk(**kwargs)


class CompanyTables:
    """Per company lookup arrays (company index -> ...)."""

    def __init__(self, meta):
        comps = meta.companies
        width = max(len(c.users) for c in comps)
        self.ids = np.array([c.id for c in comps], dtype=np.int32)
        self.n_users = np.array([len(c.users) for c in comps], dtype=np.int64)
        self.users = np.zeros((len(comps), width), dtype=np.int32)
        self.teams = np.zeros((len(comps), width), dtype=np.int32)
        self.locked = np.zeros((len(comps), width), dtype=bool)
        for i, c in enumerate(comps):
            self.users[i, : len(c.users)] = c.users
            self.teams[i, : len(c.teams)] = c.teams
            self.locked[i, : len(c.locked)] = c.locked
        self.fx = np.array([c.fx for c in comps])
        self.e = np.array([c.minor_exp for c in comps], dtype=np.int16)
        self.dp = np.array([c.dp for c in comps], dtype=np.int16)
        self.vdays = np.array([c.validity_days for c in comps], dtype=np.int16)


def window_orders(pop, args, w, active, drawn, take, rng):
    """Customers and times (days) of the orders of window ``w``, sorted by time."""
    lo, hi = pop.edges[w], pop.edges[w + 1]
    born = np.flatnonzero((pop.birth >= lo) & (pop.birth < hi))
    sel = take > 0
    cust_r, k, n_r = active[sel], take[sel], drawn[sel]
    if len(k):
        start = np.maximum(lo, pop.birth[cust_r])
        # first k order statistics of n uniforms on [start, hi): S_j / (S_k + Gamma(n - k + 1))
        cum = np.cumsum(rng.standard_exponential(int(k.sum())))
        ends = np.cumsum(k)
        before = np.concatenate(([0.0], cum[ends[:-1] - 1]))
        cum -= np.repeat(before, k)
        denom = cum[ends - 1] + rng.gamma((n_r - k + 1).astype(float))
        t_rep = np.repeat(start, k) + np.repeat(hi - start, k) * cum / np.repeat(denom, k)
        t_rep = np.minimum(t_rep, np.nextafter(hi, lo))
        cust_rep = np.repeat(cust_r, k)
        quota = int(pop.thin_quota[w])
        if quota:
            keep = np.ones(len(t_rep), dtype=bool)
            keep[rng.choice(len(t_rep), quota, replace=False)] = False
            t_rep, cust_rep = t_rep[keep], cust_rep[keep]
    else:
        t_rep = np.zeros(0)
        cust_rep = np.zeros(0, dtype=np.int64)
    cust = np.concatenate((born, cust_rep))
    t = np.concatenate((pop.birth[born], t_rep))
    order = np.argsort(t, kind="stable")
    return cust[order], t[order]


def draw_lines(args, meta, tables, comp, cust, pop, rng):
    """Order values (Gamma-Gamma) split over lines; returns totals and line arrays."""
    n = len(cust)
    scale = 10.0 ** tables.e[comp]
    value = rng.gamma(args.gg_p, 1.0, n) / pop.nu[cust] * tables.fx[comp] * scale
    n_lines = 1 + rng.poisson(args.lines_per_order - 1.0, n)
    value = np.maximum(np.rint(value), n_lines)
    line_order = np.repeat(np.arange(n), n_lines)
    starts = np.cumsum(n_lines) - n_lines
    product = meta.product_ids[
        rng.choice(len(meta.product_ids), len(line_order), p=meta.product_weights)
    ]
    qty = 1 + rng.poisson(QTY_EXTRA, len(line_order))
    weight = rng.standard_exponential(len(line_order))
    share = weight / np.add.reduceat(weight, starts)[line_order]
    price = np.maximum(1, np.rint(value[line_order] * share / qty)).astype(np.int64)
    amount = np.add.reduceat(price * qty, starts)
    return amount, line_order, product, qty.astype(np.int32), price


def name_keys_for(meta, comp, ts):
    """The name key of each order (its company's sequence, or the date range of its date)."""
    keys = np.zeros(len(comp), dtype=np.int16)
    days = (ts // 86400).astype("datetime64[D]")
    for i, company in enumerate(meta.companies):
        mask = comp == i
        if company.range_starts is None:
            keys[mask] = company.name_keys[0]
        else:
            pos = np.searchsorted(company.range_starts, days[mask], side="right") - 1
            keys[mask] = np.asarray(company.name_keys)[np.clip(pos, 0, None)]
    return keys


class NumberReserver:
    """Reserves blocks of order numbers in the sale sequences (in its own transactions)."""

    def __init__(self, dbname, keys):
        self.cr = open_cursor(dbname)
        self.keys = keys

    def numbers(self, key_idx, count):
        """``count`` consecutive numbers of name key ``key_idx``."""
        key = self.keys[key_idx]
        first = self._reserve(key, count)
        return first + key.increment * np.arange(count, dtype=np.int64)

    def _reserve(self, key, count):
        span = key.increment * count
        if key.implementation == "standard":
            seq = f"ir_sequence_{key.seq_id:03d}"
            if key.range_id:
                seq += f"_{key.range_id:03d}"
            self.cr.execute(SQL("SELECT nextval(%s)", seq))
            first = self.cr.fetchone()[0]
            if count > 1:
                self.cr.execute(SQL("SELECT setval(%s, %s)", seq, first + span - key.increment))
        else:
            table = "ir_sequence_date_range" if key.range_id else "ir_sequence"
            self.cr.execute(
                SQL(
                    "UPDATE %s SET number_next = number_next + %s WHERE id = %s "
                    "RETURNING number_next - %s",
                    SQL.identifier(table),
                    span,
                    key.range_id or key.seq_id,
                    span,
                )
            )
            first = self.cr.fetchone()[0]
        self.cr.commit()
        return first

    def close(self):
        """Close the cursor."""
        self.cr.close()


@dataclass
class Tally:
    """Running statistics of what has been generated."""

    n_customers: int
    n_companies: int
    orders_per_customer: np.ndarray = None
    bought_from: np.ndarray = None  # (customer, company index) -> has ordered
    last_order: np.ndarray = None
    orders: dict = field(default_factory=dict)
    lines: dict = field(default_factory=dict)
    revenue: dict = field(default_factory=dict)
    first_ts: int = None
    last_ts: int = None
    gen_seconds: float = 0.0

    def __post_init__(self):
        self.orders_per_customer = np.zeros(self.n_customers, dtype=np.int64)
        self.last_order = np.zeros(self.n_customers)
        self.bought_from = np.zeros((self.n_customers, self.n_companies), dtype=bool)

    def add(self, chunk, t_days, comp_idx, tables):
        """Account for one window's orders."""
        self.orders_per_customer += np.bincount(chunk.cust, minlength=self.n_customers)
        rev_cust = chunk.cust[::-1]
        uniq, pos = np.unique(rev_cust, return_index=True)
        self.last_order[uniq] = t_days[::-1][pos]
        self.bought_from[chunk.cust, comp_idx] = True
        lines_per_comp = np.bincount(comp_idx[chunk.line_order], minlength=len(tables.ids))
        for i, cid in enumerate(tables.ids.tolist()):
            mask = comp_idx == i
            self.orders[cid] = self.orders.get(cid, 0) + int(mask.sum())
            self.lines[cid] = self.lines.get(cid, 0) + int(lines_per_comp[i])
            revenue = float(chunk.amount[mask].sum()) / 10.0 ** int(tables.e[i])
            self.revenue[cid] = self.revenue.get(cid, 0.0) + revenue
        if len(chunk.ts):
            lo, hi = int(chunk.ts.min()), int(chunk.ts.max())
            self.first_ts = lo if self.first_ts is None else min(self.first_ts, lo)
            self.last_ts = hi if self.last_ts is None else max(self.last_ts, hi)


def generate_chunks(pop, args, meta, reserver, tally):
    """Yield one Chunk per simulation window, orders sorted by date, names assigned."""
    tables = CompanyTables(meta)
    start_epoch = epoch_of_start(meta, pop)
    for w, active, drawn, take in repeat_counts(pop, args.seed):
        t0 = time.perf_counter()
        rng = seed_rng(args.seed, 2, w)
        cust, t = window_orders(pop, args, w, active, drawn, take, rng)
        if not len(cust):
            continue
        comp = pop.comp1[cust].astype(np.int64)
        second = (pop.comp2[cust] >= 0) & (rng.random(len(cust)) < SECOND_COMPANY_SHARE)
        comp[second] = pop.comp2[cust][second]
        slot = pop.rep_key[cust] % tables.n_users[comp]
        ts = start_epoch + np.floor(t * 86400.0).astype(np.int64)
        amount, line_order, product, qty, price = draw_lines(
            args,
            meta,
            tables,
            comp,
            cust,
            pop,
            rng,
        )
        keys = name_keys_for(meta, comp, ts)
        numbers = np.zeros(len(cust), dtype=np.int64)
        for key in np.unique(keys).tolist():
            mask = keys == key
            numbers[mask] = reserver.numbers(key, int(mask.sum()))
        chunk = Chunk(
            cust=cust.astype(np.int32),
            company_id=tables.ids[comp],
            user_id=tables.users[comp, slot],
            team_id=tables.teams[comp, slot],
            locked=tables.locked[comp, slot],
            ts=ts,
            vdays=tables.vdays[comp],
            amount=amount,
            e=tables.e[comp],
            dp=tables.dp[comp],
            name_key=keys,
            name_num=numbers,
            line_order=line_order,
            line_product=product,
            line_qty=qty,
            line_price=price,
        )
        tally.add(chunk, t, comp, tables)
        tally.gen_seconds += time.perf_counter() - t0
        yield chunk


# --------------------------------------------------------------------------- binary COPY

_PG_TYPES = {
    "int2": ">i2",
    "int4": ">i4",
    "int8": ">i8",
    "float8": ">f8",
    "bool": "u1",
    "timestamp": ">i8",
}
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
_COPY_TRAILER = b"\xff\xff"


def copy_payload(columns):
    """PostgreSQL binary COPY data for ``[(pg_type, array), ...]`` (no NULLs), vectorised."""
    n = len(columns[0][1])
    fields = [("nf", ">i2")]
    for i, (pg_type, _) in enumerate(columns):
        fields += [(f"l{i}", ">i4"), (f"v{i}", _PG_TYPES[pg_type])]
    rows = np.empty(n, dtype=np.dtype(fields))
    rows["nf"] = len(columns)
    for i, (pg_type, values) in enumerate(columns):
        rows[f"l{i}"] = np.dtype(_PG_TYPES[pg_type]).itemsize
        rows[f"v{i}"] = values
    return b"".join((_COPY_HEADER, rows.tobytes(), _COPY_TRAILER))


def copy_into(cr, table, columns):
    """COPY ``{column: (pg_type, array)}`` into the staging ``table`` (binary format)."""
    statement = SQL(
        "COPY %s (%s) FROM STDIN WITH (FORMAT binary)",
        SQL.identifier(table),
        SQL(", ").join(SQL.identifier(name) for name in columns),
    )
    data = copy_payload(list(columns.values()))
    cr._obj.copy_expert(statement.code, io.BytesIO(data), size=1 << 20)


def pg_timestamp(unix_seconds):
    """Unix seconds -> PostgreSQL binary timestamp (microseconds since 2000-01-01)."""
    return (np.asarray(unix_seconds, dtype=np.int64) - PG_EPOCH) * 1_000_000


# --------------------------------------------------------------------------- SQL statements

STAGE_SLOTS = 3  # a worker may insert the orders of its next chunks before the lines
STAGING_DDL = (
    """CREATE TEMP TABLE gen_stage_partner (
        id int4 NOT NULL DEFAULT nextval('res_partner_id_seq'::regclass),
        cust int4, is_company bool, n1 int2, n2 int2, n3 int2, company_id int4,
        country_id int4, cidx int2, has_phone bool, phone_var int8, ts timestamp
    ) ON COMMIT DROP""",
    *(
        f"""CREATE TEMP TABLE gen_stage_order_{slot} (
        id int4 NOT NULL DEFAULT nextval('sale_order_id_seq'::regclass),
        k int4, partner_id int4, company_id int4, user_id int4, team_id int4, locked bool,
        ts timestamp, vdays int2, amount int8, e int2, dp int2, name_key int2, name_num int8
    ) ON COMMIT DROP"""
        for slot in range(STAGE_SLOTS)
    ),
    *(
        f"""CREATE TEMP TABLE gen_stage_line_{slot} (
        k int4, company_id int4, product_id int4, qty int4, price int8
    ) ON COMMIT DROP"""
        for slot in range(STAGE_SLOTS)
    ),
)


SESSION_SETTINGS = (
    "SET LOCAL work_mem = '256MB'",
    "SET LOCAL maintenance_work_mem = '512MB'",
    "SET LOCAL temp_buffers = '256MB'",
    "SET LOCAL gin_pending_list_limit = '32MB'",
    "SET LOCAL synchronous_commit = off",
    "SET LOCAL jit = off",
)


TARGET_TABLES = ("res_partner", "sale_order", "sale_order_line")


@dataclass
class LoadPlan:
    """How the loaders write: with or without the per-row foreign key triggers."""

    replica: bool  # session_replication_role = replica: RI triggers skipped, checked after
    reason: str  # why (not) replica, for the report
    foreign_keys: dict  # table -> [(conname, [cols], ref table, [ref cols], match type)]
    floors: dict  # table -> max(id) before the load: the loaded rows have greater ids


def foreign_keys(cr):
    """The foreign key constraints of the target tables, from pg_constraint."""
    cr.execute(
        SQL(
            """SELECT c.conrelid::regclass::text, c.conname, rn.nspname, r.relname,
                      c.confmatchtype,
                      ARRAY(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
                              JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n
                             ORDER BY k.i),
                      ARRAY(SELECT a.attname FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
                              JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n
                             ORDER BY k.i)
                 FROM pg_constraint c
                 JOIN pg_class r ON r.oid = c.confrelid
                 JOIN pg_namespace rn ON rn.oid = r.relnamespace
                WHERE c.contype = 'f' AND c.conrelid = ANY(%s::regclass[])
                ORDER BY c.conrelid, c.conname""",
            list(TARGET_TABLES),
        )
    )
    fks = {table: [] for table in TARGET_TABLES}
    for table, conname, ref_nsp, ref_rel, match, cols, ref_cols in cr.fetchall():
        fks[table].append((conname, list(cols), (ref_nsp, ref_rel), list(ref_cols), match))
    return fks


def user_triggers(cr):
    """Triggers of the target tables other than the internal foreign key ones."""
    cr.execute(
        SQL(
            """SELECT tgrelid::regclass::text || '.' || tgname::text
                      || ' (enabled ' || tgenabled::text || ')'
                 FROM pg_trigger WHERE tgrelid = ANY(%s::regclass[]) AND NOT tgisinternal
                ORDER BY 1""",
            list(TARGET_TABLES),
        )
    )
    return [row[0] for row in cr.fetchall()]


def load_plan(dbname, keep_triggers=False):
    """Decide whether the loaders run with ``session_replication_role = replica``.

    In replica mode PostgreSQL skips the per-row foreign key triggers (and every
    ordinary trigger); the loaders then check every foreign key of the loaded rows
    set-based before committing.  It needs a superuser (or the SET privilege on the
    parameter) and no user trigger on the target tables (their effect would be lost).
    """
    with contextlib.closing(open_cursor(dbname)) as cr:
        fks = foreign_keys(cr)
        triggers = user_triggers(cr)
        floors = {}
        for table in TARGET_TABLES:
            cr.execute(SQL("SELECT coalesce(max(id), 0) FROM %s", SQL.identifier(table)))
            floors[table] = cr.fetchone()[0]
        if keep_triggers:
            replica, reason = False, "--keep-fk-triggers"
        elif triggers:
            replica = False
            reason = "user triggers on the target tables would be skipped: " + ", ".join(triggers)
        else:
            try:
                cr.execute("SET LOCAL session_replication_role = replica", log_exceptions=False)
                replica, reason = True, "superuser: per-row FK triggers off, FKs checked after"
            except pg_errors.InsufficientPrivilege:
                replica, reason = False, "not superuser: per-row FK triggers kept"
        cr.rollback()
    return LoadPlan(replica, reason, fks, floors)


@dataclass
class SavedIndex:
    """A secondary index dropped for the load, to be rebuilt afterwards."""

    table: str
    name: str  # as regclass text, usable in DROP INDEX
    definition: str  # pg_get_indexdef
    method: str


def bulk_tables(cr, args):
    """The target tables to which the load adds more than BULK_SHARE of their rows."""
    added = {
        "res_partner": args.customers,
        "sale_order": args.orders,
        "sale_order_line": args.orders * args.lines_per_order,
    }
    tables = []
    for table in TARGET_TABLES:
        cr.execute(SQL("SELECT count(*) FROM %s", SQL.identifier(table)))
        if added[table] > BULK_SHARE * cr.fetchone()[0]:
            tables.append(table)
    return tables


def secondary_indexes(cr, tables, probes):
    """Indexes of ``tables`` that no constraint needs (not unique, not used by a
    constraint) and that the loaded rows feed: not partial, GIN (a GIN index has an
    entry even for NULL keys), or partial with a predicate true for one of the ORM
    probe rows (with a phone number, as most generated partners have one); the other
    partial indexes (``WHERE x IS NOT NULL`` on columns the generator leaves empty)
    cost nothing to maintain and stay."""
    cr.execute(
        SQL(
            """SELECT c.relname, i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid),
                      am.amname, pg_get_expr(i.indpred, i.indrelid)
                 FROM pg_index i
                 JOIN pg_class c ON c.oid = i.indrelid
                 JOIN pg_class ic ON ic.oid = i.indexrelid
                 JOIN pg_am am ON am.oid = ic.relam
                WHERE i.indrelid = ANY(%s::regclass[])
                  AND NOT i.indisunique AND NOT i.indisprimary AND NOT i.indisexclusion
                  AND i.indisvalid AND i.indisready
                  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
                ORDER BY am.amname = 'gin' DESC, pg_relation_size(i.indrelid) DESC,
                         i.indexrelid""",
            tables,
        )
    )
    saved = []
    for table, name, definition, method, predicate in cr.fetchall():
        if predicate and method != "gin":
            rows = probes[table]
            if table == "res_partner":
                rows = rows + [
                    dict(row, phone="+1 5550100", phone_sanitized="+15550100") for row in rows
                ]
            cr.execute(
                SQL(
                    "SELECT bool_or(%s) FROM jsonb_populate_recordset(NULL::%s, %s) AS %s",
                    SQL(predicate),  # from the catalog (pg_get_expr), not user input
                    SQL.identifier(table),
                    Json(rows),
                    SQL.identifier(table),
                )
            )
            if not cr.fetchone()[0]:
                continue
        saved.append(SavedIndex(table, name, definition, method))
    return saved


def drop_indexes(dbname, args, probes):
    """Drop (committed) the secondary indexes of the tables that the load makes much
    bigger; return them.  Their definitions are first written to a file, in case the
    process dies before :func:`rebuild_indexes` runs."""
    with contextlib.closing(open_cursor(dbname)) as cr:
        tables = bulk_tables(cr, args)
        if not tables:
            return [], None
        saved = secondary_indexes(cr, tables, probes)
        if not saved:
            return [], None
        fd, path = tempfile.mkstemp(prefix=f"ecrm_gen_{dbname}_indexes_", suffix=".sql")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(
                f"-- secondary indexes dropped by generate_data.py in {dbname}; "
                "if the script died, recreate them with psql -f\n"
            )
            out.writelines(f"{index.definition};\n" for index in saved)
        cr.execute("SET LOCAL lock_timeout = '30s'")
        for index in saved:
            cr.execute(SQL("DROP INDEX %s", SQL(index.name)))
        cr.commit()
    return saved, path


def rebuild_indexes(dbname, saved, connections):
    """Recreate the dropped indexes, spread over ``connections`` parallel sessions (each
    CREATE INDEX is atomic); raise if one could not be created."""
    todo = queue.Queue()
    for index in saved:  # GIN and the biggest tables first
        todo.put(index)
    failures = []

    def build():
        with contextlib.closing(open_cursor(dbname)) as cr:
            cr.execute("SET maintenance_work_mem = '1GB'")
            cr.execute("SET max_parallel_maintenance_workers = 0")
            cr.commit()
            while True:
                try:
                    index = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    cr.execute(SQL(index.definition))
                    cr.commit()
                except Exception as exc:
                    cr.rollback()
                    failures.append(f"{index.definition}: {exc}")

    threads = [threading.Thread(target=build) for _ in range(max(1, connections))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise GenerationError("could not recreate indexes:\n" + "\n".join(failures))


def fk_snapshot_statements(table, fks, floor):
    """Copy the foreign key columns of the rows of ``table`` with id > ``floor`` into a
    narrow temporary table, and ANALYZE it: the planner then knows how many new rows
    there are (the target tables' own statistics date from before the load)."""
    snap = SQL.identifier(f"gen_fk_{table}")
    cols = sorted({col for fk in fks for col in fk[1]})
    return (
        SQL("DROP TABLE IF EXISTS %s", snap),
        SQL(
            "CREATE TEMP TABLE %s ON COMMIT DROP AS SELECT %s FROM %s WHERE id > %s",
            snap,
            SQL(", ").join(SQL.identifier(col) for col in cols),
            SQL.identifier(table),
            floor,
        ),
        SQL("ANALYZE %s", snap),
    )


def fk_presence_statement(table, fks):
    """Count the new rows of ``table`` and, per foreign key, those whose key is set (all
    its columns non NULL), from the snapshot table."""
    counts = [
        SQL(
            "count(*) FILTER (WHERE %s)",
            SQL(" AND ").join(SQL("%s IS NOT NULL", SQL.identifier(col)) for col in cols),
        )
        for _conname, cols, _ref, _ref_cols, _match in fks
    ]
    return SQL(
        "SELECT count(*), %s FROM %s", SQL(", ").join(counts), SQL.identifier(f"gen_fk_{table}")
    )


def fk_check_statement(table, fk):
    """Count the new rows of ``table`` (snapshot table) whose key ``fk`` is set but whose
    referenced row does not exist (one anti-join)."""
    _conname, cols, ref, ref_cols, match = fk
    present = SQL(" AND ").join(SQL("%s IS NOT NULL", SQL.identifier("c", col)) for col in cols)
    orphan = SQL(
        "%s AND NOT EXISTS (SELECT 1 FROM %s p WHERE %s)",
        present,
        SQL.identifier(*ref),
        SQL(" AND ").join(
            SQL("%s = %s", SQL.identifier("p", rc), SQL.identifier("c", col))
            for col, rc in zip(cols, ref_cols, strict=True)
        ),
    )
    if match == "f" and len(cols) > 1:  # MATCH FULL: partly NULL keys are violations too
        orphan = SQL(
            "(%s) OR (NOT (%s) AND num_nonnulls(%s) > 0)",
            orphan,
            present,
            SQL(", ").join(SQL.identifier("c", col) for col in cols),
        )
    return SQL("SELECT count(*) FROM %s c WHERE %s", SQL.identifier(f"gen_fk_{table}"), orphan)


def insert_select(table, columns, variable, source):
    """``INSERT INTO table (all columns but id unless variable) SELECT ...``: variable
    columns get their SQL expression, the others the ORM probe's value (alias ``pr``)."""
    cols, exprs = [], []
    for col in columns:
        if col == "id" and "id" not in variable:
            continue
        cols.append(SQL.identifier(col))
        exprs.append(variable.get(col) or SQL("pr.%s", SQL.identifier(col)))
    return SQL(
        "INSERT INTO %s (%s) SELECT %s FROM %s",
        SQL.identifier(table),
        SQL(", ").join(cols),
        SQL(", ").join(exprs),
        source,
    )


def partner_statement(meta):
    """INSERT ... SELECT of the staged partners."""
    words = {
        "first": list(FIRST_NAMES),
        "last": list(LAST_NAMES),
        "cword": list(COMPANY_WORDS),
        "ckind": list(COMPANY_KINDS),
        "csuffix": list(COMPANY_SUFFIXES),
        "domain": list(EMAIL_DOMAINS),
    }
    source = SQL(
        """(SELECT s.*,
                CASE WHEN s.is_company
                     THEN (%(cword)s::text[])[s.n1 + 1] || ' ' || (%(ckind)s::text[])[s.n2 + 1]
                          || ' ' || (%(csuffix)s::text[])[s.n3 + 1]
                     ELSE (%(first)s::text[])[s.n1 + 1] || ' ' || (%(last)s::text[])[s.n2 + 1]
                END AS gname,
                CASE WHEN s.is_company
                     THEN 'info.' || s.id || '@' || lower((%(cword)s::text[])[s.n1 + 1]) || '-'
                          || lower((%(ckind)s::text[])[s.n2 + 1]) || '.example.com'
                     ELSE (%(first)s::text[])[s.n1 + 1] || '.' || (%(last)s::text[])[s.n2 + 1]
                          || '.' || s.id || '@' || (%(domain)s::text[])[s.n3 + 1]
                END AS gemail,
                (%(prefix)s::text[])[s.cidx + 1]
                    || lpad(s.phone_var::text, (%(varlen)s::int[])[s.cidx + 1], '0') AS gnsn
           FROM gen_stage_partner s) s
           JOIN jsonb_populate_recordset(NULL::res_partner, %(probe)s) pr
             ON pr.is_company = s.is_company AND pr.country_id = s.country_id""",
        prefix=meta.phone_prefix,
        varlen=meta.phone_var_len,
        probe=Json(meta.probes["res_partner"]),
        **words,
    )
    cc = SQL("(%s::text[])[s.cidx + 1]", meta.phone_cc)
    variable = {
        "id": SQL("s.id"),
        "name": SQL("s.gname"),
        "complete_name": SQL("s.gname"),
        "commercial_company_name": SQL("CASE WHEN s.is_company THEN s.gname END"),
        "commercial_partner_id": SQL("s.id"),
        "email": SQL("s.gemail"),
        "email_normalized": SQL("lower(s.gemail)"),
        "phone": SQL("CASE WHEN s.has_phone THEN '+' || %s || ' ' || s.gnsn END", cc),
        "phone_sanitized": SQL(
            "CASE WHEN s.has_phone AND (%s::bool[])[s.cidx + 1] THEN '+' || %s || s.gnsn END",
            meta.phone_sanitized,
            cc,
        ),
        "country_id": SQL("s.country_id"),
        "is_company": SQL("s.is_company"),
        "company_id": SQL("NULLIF(s.company_id, 0)"),
        "customer_rank": SQL("1"),
        "create_date": SQL("s.ts"),
        "write_date": SQL("s.ts"),
        "create_uid": SQL("%s", meta.admin_uid),
        "write_uid": SQL("%s", meta.admin_uid),
    }
    return insert_select("res_partner", meta.columns["res_partner"], variable, source)


def order_statement(meta, slot):
    """INSERT ... SELECT of the staged orders."""
    keys = meta.name_keys
    number = SQL(
        "CASE WHEN length(s.name_num::text) >= (%s::int[])[s.name_key + 1] THEN s.name_num::text"
        " ELSE lpad(s.name_num::text, (%s::int[])[s.name_key + 1], '0') END",
        [k.padding for k in keys],
        [k.padding for k in keys],
    )
    amount = SQL("round(s.amount / (10::numeric ^ s.e), s.dp::int)")
    variable = {
        "id": SQL("s.id"),
        "name": SQL(
            "(%s::text[])[s.name_key + 1] || %s || (%s::text[])[s.name_key + 1]",
            [k.prefix for k in keys],
            number,
            [k.suffix for k in keys],
        ),
        "company_id": SQL("s.company_id"),
        "partner_id": SQL("s.partner_id"),
        "partner_invoice_id": SQL("s.partner_id"),
        "partner_shipping_id": SQL("s.partner_id"),
        "user_id": SQL("s.user_id"),
        "team_id": SQL("NULLIF(s.team_id, 0)"),
        "create_uid": SQL("s.user_id"),
        "write_uid": SQL("s.user_id"),
        "create_date": SQL("s.ts"),
        "write_date": SQL("s.ts"),
        "date_order": SQL("s.ts"),
        "validity_date": SQL("CASE WHEN s.vdays > 0 THEN s.ts::date + s.vdays::int END"),
        "amount_untaxed": amount,
        "amount_tax": SQL("round(0::numeric, s.dp::int)"),
        "amount_total": amount,
        "locked": SQL("s.locked"),
        "access_token": SQL("NULL"),
    }
    source = SQL(
        "%s s JOIN jsonb_populate_recordset(NULL::sale_order, %s) pr"
        " ON pr.company_id = s.company_id",
        SQL.identifier(f"gen_stage_order_{slot}"),
        Json(meta.probes["sale_order"]),
    )
    return insert_select("sale_order", meta.columns["sale_order"], variable, source)


def line_statement(meta, slot):
    """INSERT ... SELECT of the staged order lines."""
    unit = SQL("round(l.price / (10::numeric ^ o.e), %s)", meta.price_dp)
    subtotal = SQL("round(l.price * l.qty / (10::numeric ^ o.e), o.dp::int)")
    qty = SQL("round(l.qty::numeric, %s)", meta.uom_dp)
    variable = {
        "order_id": SQL("o.id"),
        "company_id": SQL("o.company_id"),
        "order_partner_id": SQL("o.partner_id"),
        "salesman_id": SQL("o.user_id"),
        "product_id": SQL("l.product_id"),
        "create_uid": SQL("o.user_id"),
        "write_uid": SQL("o.user_id"),
        "create_date": SQL("o.ts"),
        "write_date": SQL("o.ts"),
        "product_uom_qty": qty,
        "price_unit": unit,
        "technical_price_unit": SQL("(l.price / (10::numeric ^ o.e))::float8"),
        "price_subtotal": subtotal,
        "price_total": subtotal,
        "price_tax": SQL("0::float8"),
        "price_reduce_taxexcl": unit,
        "price_reduce_taxinc": unit,
        "qty_to_invoice": SQL(
            "CASE WHEN pr.qty_to_invoice > 0 THEN %s ELSE pr.qty_to_invoice END",
            qty,
        ),
        "untaxed_amount_to_invoice": SQL(
            "CASE WHEN pr.untaxed_amount_to_invoice > 0 THEN %s"
            " ELSE pr.untaxed_amount_to_invoice END",
            subtotal,
        ),
    }
    source = SQL(
        "%s l JOIN %s o ON o.k = l.k"
        " JOIN jsonb_populate_recordset(NULL::sale_order_line, %s) pr"
        " ON pr.company_id = l.company_id AND pr.product_id = l.product_id",
        SQL.identifier(f"gen_stage_line_{slot}"),
        SQL.identifier(f"gen_stage_order_{slot}"),
        Json(meta.probes["sale_order_line"]),
    )
    return insert_select("sale_order_line", meta.columns["sale_order_line"], variable, source)


# --------------------------------------------------------------------------- loader workers

# A worker prefers lines (the biggest table, the critical path), then orders, then partners.
TABLE_PRIORITY = ("lines", "orders", "partners")


class TableGate:
    """Lets one worker at a time insert into each target table, when possible.

    Two INSERTs into the same Odoo table barely run faster than one (the GIN trigram
    index on ``sale_order.name`` serialises them completely; the right-most pages of the
    constant-key B-tree indexes are shared), whereas INSERTs into different tables run
    side by side at almost full speed.  So each worker inserts into a table that is free.
    When none is, a worker shares the lines table (two line writers still give ~1.3x
    the throughput of one) rather than sit idle; the other tables are never shared.
    """

    SHAREABLE = ("lines",)

    def __init__(self, abort):
        self.cond = threading.Condition()
        self.busy = dict.fromkeys(TABLE_PRIORITY, 0)
        self.abort = abort

    def acquire_any(self, tables):
        """Block until one of ``tables`` (in priority order) can be used; return it."""
        with self.cond:
            while True:
                free = [t for t in tables if not self.busy[t]]
                free += [t for t in tables if t in self.SHAREABLE]
                if free:
                    self.busy[free[0]] += 1
                    return free[0]
                if self.abort.is_set():
                    raise GenerationError("loading aborted")
                self.cond.wait(timeout=0.5)

    def release(self, table):
        """Release ``table`` and wake up the waiting workers."""
        with self.cond:
            self.busy[table] -= 1
            self.cond.notify_all()


@dataclass
class LoaderShared:
    """State shared by the loader threads."""

    statements: dict  # "partners" and ("orders" | "lines", slot) -> SQL
    plan: LoadPlan
    partner_ids: np.ndarray  # customer index -> res.partner id (each worker fills its shard)
    abort: threading.Event
    gate: TableGate


@dataclass
class Job:
    """One chunk of one worker: the customers needing a partner first, then orders + lines."""

    partners: dict | None  # staging columns of the new partners
    chunk: Chunk | None
    slot: int = 0
    done: set = field(default_factory=set)

    def next_step(self):
        """The next step of this job ('partners', 'stage', 'orders', 'lines') or None."""
        for step, needed in (
            ("partners", self.partners is not None),
            ("stage", self.chunk is not None),
            ("orders", self.chunk is not None),
            ("lines", self.chunk is not None),
        ):
            if needed and step not in self.done:
                return step
        return None


class Loader(threading.Thread):
    """One PostgreSQL connection and transaction loading the jobs of one customer shard."""

    def __init__(self, wid, dbname, shared):
        super().__init__(name=f"loader-{wid}", daemon=True)
        self.wid = wid
        self.dbname = dbname
        self.shared = shared
        self.abort = shared.abort
        self.jobs = queue.Queue(maxsize=2)
        self.pending = []
        self.next_slot = 0
        self.exhausted = False
        self.cr = None
        self.backend_pid = None
        self.backend_cpu = None
        self.error = None
        self.seconds = {}
        self.counts = {"partners": 0, "orders": 0, "lines": 0}
        self.order_id_ranges = []
        self.fk_checked = {}
        self.fk_used = {}

    def run(self):
        """Work until the ``None`` sentinel; on error, flag the abort and drain the queue."""
        try:
            self.cr = open_cursor(self.dbname)
            self.cr.execute("SELECT pg_backend_pid()")
            self.backend_pid = self.cr.fetchone()[0]
            for statement in SESSION_SETTINGS + STAGING_DDL:
                self.cr.execute(statement)
            if self.shared.plan.replica:
                self.cr.execute("SET LOCAL session_replication_role = replica")
            while self._refill():
                self._advance()
            if self.shared.plan.replica:
                t0 = time.perf_counter()
                self._check_foreign_keys()
                self._add_time("FK check", time.perf_counter() - t0)
        except Exception:
            self.error = traceback.format_exc()
            self.abort.set()
            while not self.exhausted:
                try:
                    self.exhausted = self.jobs.get(timeout=0.5) is None
                except queue.Empty:
                    self.exhausted = True

    def put(self, job):
        """Queue a job (``None`` ends the work), unless the loading was aborted."""
        while True:
            if self.abort.is_set():
                raise GenerationError("loading aborted")
            try:
                self.jobs.put(job, timeout=0.5)
                return
            except queue.Full:
                continue

    def _refill(self):
        """Take jobs until STAGE_SLOTS are in progress; False when all work is done."""
        while not self.exhausted and len(self.pending) < STAGE_SLOTS:
            try:
                job = self.jobs.get(timeout=0.5) if not self.pending else self.jobs.get_nowait()
            except queue.Empty:
                if self.pending:
                    break
                if self.abort.is_set():
                    raise GenerationError("loading aborted") from None
                continue
            if job is None:
                self.exhausted = True
            else:
                job.slot = self.next_slot
                self.next_slot = (self.next_slot + 1) % STAGE_SLOTS
                self.pending.append(job)
        return bool(self.pending)

    def _advance(self):
        """Run one step: staging if possible (no table needed), else a free table's step."""
        for job in self.pending:  # staging needs the partner ids of all older jobs
            step = job.next_step()
            if step == "partners":
                break
            if step == "stage":
                self._run(job, "stage")
                return
        candidates = {}
        for job in self.pending:  # oldest job first: per table, jobs run in order
            candidates.setdefault(job.next_step(), job)
        tables = [t for t in TABLE_PRIORITY if t in candidates]
        t0 = time.perf_counter()
        table = self.shared.gate.acquire_any(tables)
        self._add_time("waiting for a free table", time.perf_counter() - t0)
        try:
            self._run(candidates[table], table)
        finally:
            self.shared.gate.release(table)
        self.pending = [job for job in self.pending if job.next_step() is not None]

    def _run(self, job, step):
        t0 = time.perf_counter()
        getattr(self, f"_step_{step}")(job)
        job.done.add(step)
        self._add_time(step, time.perf_counter() - t0)

    def _add_time(self, label, seconds):
        self.seconds[label] = self.seconds.get(label, 0.0) + seconds

    def _check_foreign_keys(self):
        """Check every foreign key of this worker's rows (its transaction sees only its own
        new rows, which reference only committed rows and its own); raise on orphans.

        The key columns of the new rows are first copied to a narrow, analyzed temporary
        table; only the keys set in some new row are then anti-joined with their
        referenced table (this skips, e.g., all of ``sale_order_line`` for the always
        empty ``linked_line_id``).  Nested loops are disabled: the referenced tables'
        statistics date from before the load, and a nested loop over millions of rows
        would be slower than the per-row triggers it replaces."""
        plan, cr = self.shared.plan, self.cr
        cr.execute("SET LOCAL enable_nestloop = off")
        for table in TARGET_TABLES:
            fks = plan.foreign_keys[table]
            if not fks:
                continue
            for statement in fk_snapshot_statements(table, fks, plan.floors[table]):
                cr.execute(statement)
            cr.execute(fk_presence_statement(table, fks))
            checked, *present = cr.fetchone()
            self.fk_checked[table] = checked
            fks = [fk for fk, n in zip(fks, present, strict=True) if n or fk[4] == "f"]
            self.fk_used[table] = len(fks)
            bad = []
            for fk in fks:
                cr.execute(fk_check_statement(table, fk))
                orphans = cr.fetchone()[0]
                if orphans:
                    bad.append(f"{fk[0]}: {orphans}")
            if bad:
                raise GenerationError(
                    f"orphan rows in {table} (foreign keys violated): {', '.join(bad)}"
                )

    def _step_partners(self, job):
        """COPY and INSERT the job's new partners; remember their ids."""
        cr = self.cr
        cr.execute("TRUNCATE gen_stage_partner")
        copy_into(cr, "gen_stage_partner", job.partners)
        cr.execute(self.shared.statements["partners"])
        cr.execute("SELECT cust, id FROM gen_stage_partner")
        rows = np.array(cr.fetchall(), dtype=np.int64).reshape(-1, 2)
        self.shared.partner_ids[rows[:, 0]] = rows[:, 1]
        self.counts["partners"] += len(rows)
        job.partners = None  # free the memory
        job.done.add("partners")

    def _step_stage(self, job):
        """COPY the job's orders and lines into its staging slot."""
        cr, chunk, slot = self.cr, job.chunk, job.slot
        partner_id = self.shared.partner_ids[chunk.cust]
        if not partner_id.all():
            raise GenerationError("an order references a customer without partner")
        cr.execute(
            SQL(
                "TRUNCATE %s, %s",
                SQL.identifier(f"gen_stage_order_{slot}"),
                SQL.identifier(f"gen_stage_line_{slot}"),
            )
        )
        copy_into(
            cr,
            f"gen_stage_order_{slot}",
            {
                "k": ("int4", np.arange(len(chunk.cust))),
                "partner_id": ("int4", partner_id),
                "company_id": ("int4", chunk.company_id),
                "user_id": ("int4", chunk.user_id),
                "team_id": ("int4", chunk.team_id),
                "locked": ("bool", chunk.locked),
                "ts": ("timestamp", pg_timestamp(chunk.ts)),
                "vdays": ("int2", chunk.vdays),
                "amount": ("int8", chunk.amount),
                "e": ("int2", chunk.e),
                "dp": ("int2", chunk.dp),
                "name_key": ("int2", chunk.name_key),
                "name_num": ("int8", chunk.name_num),
            },
        )
        copy_into(
            cr,
            f"gen_stage_line_{slot}",
            {
                "k": ("int4", chunk.line_order),
                "company_id": ("int4", chunk.company_id[chunk.line_order]),
                "product_id": ("int4", chunk.line_product),
                "qty": ("int4", chunk.line_qty),
                "price": ("int8", chunk.line_price),
            },
        )
        cr.execute(
            SQL(
                "ANALYZE %s, %s",
                SQL.identifier(f"gen_stage_order_{slot}"),
                SQL.identifier(f"gen_stage_line_{slot}"),
            )
        )

    def _step_orders(self, job):
        """INSERT the staged orders."""
        self.cr.execute(self.shared.statements["orders", job.slot])
        self.cr.execute(
            SQL("SELECT min(id), max(id) FROM %s", SQL.identifier(f"gen_stage_order_{job.slot}"))
        )
        self.order_id_ranges.append(self.cr.fetchone())
        self.counts["orders"] += len(job.chunk.cust)

    def _step_lines(self, job):
        """INSERT the staged lines."""
        self.cr.execute(self.shared.statements["lines", job.slot])
        self.counts["lines"] += len(job.chunk.line_order)
        job.chunk = None  # free the memory
        job.done.update(("stage", "orders", "lines"))


def epoch_of_start(meta, pop):
    """Unix seconds of the start of the simulated history."""
    return int(meta.now.replace(tzinfo=timezone.utc).timestamp() - pop.span * 86400)


def partner_arrays(pop, idx, start_epoch, meta):
    """Staging columns for the customers ``idx`` (created one minute before their first
    order)."""
    first_ts = start_epoch + np.floor(pop.birth[idx] * 86400.0).astype(np.int64) - 60
    return {
        "cust": ("int4", idx),
        "is_company": ("bool", pop.is_company[idx]),
        "n1": ("int2", pop.names[0, idx]),
        "n2": ("int2", pop.names[1, idx]),
        "n3": ("int2", pop.names[2, idx]),
        "company_id": ("int4", pop.partner_company[idx]),
        "country_id": ("int4", meta.country_ids[pop.country_idx[idx]]),
        "cidx": ("int2", pop.country_idx[idx]),
        "has_phone": ("bool", pop.has_phone[idx]),
        "phone_var": ("int8", pop.phone_var[idx]),
        "ts": ("timestamp", pg_timestamp(first_ts)),
    }


def start_loaders(args, meta, plan):
    """Start one loader thread per worker."""
    statements = {"partners": partner_statement(meta)}
    for slot in range(STAGE_SLOTS):
        statements["orders", slot] = order_statement(meta, slot)
        statements["lines", slot] = line_statement(meta, slot)
    abort = threading.Event()
    shared = LoaderShared(
        statements, plan, np.zeros(args.customers, dtype=np.int64), abort, TableGate(abort)
    )
    workers = [Loader(w, args.database, shared) for w in range(args.workers)]
    for worker in workers:
        worker.start()
    return workers


class JobBuilder:
    """Groups the generated orders per worker (customer shard) into jobs, each preceded by
    the partners of the shard's customers born up to its last order."""

    def __init__(self, pop, args, meta, workers):
        self.pop, self.args, self.meta, self.workers = pop, args, meta, workers
        self.start_epoch = epoch_of_start(meta, pop)
        self.shards = [np.arange(w, args.customers, args.workers) for w in range(args.workers)]
        self.sent = [0] * args.workers
        self.pending = [[] for _ in workers]

    def add(self, chunk):
        """Dispatch one generated window to the shards, flushing full jobs."""
        shard = chunk.cust % self.args.workers
        for w in range(self.args.workers):
            part = chunk.take(shard == w) if self.args.workers > 1 else chunk
            if len(part.cust):
                self.pending[w].append(part)
            if sum(len(c.cust) for c in self.pending[w]) >= self.args.chunk_size:
                self.flush(w)

    def flush(self, w, final=False):
        """Queue the pending orders of shard ``w`` with the partners they need first."""
        chunk = Chunk.concat(self.pending[w]) if self.pending[w] else None
        self.pending[w] = []
        need = self.args.customers if final else int(chunk.cust.max()) + 1
        upto = int(np.searchsorted(self.shards[w], need))
        idx = self.shards[w][self.sent[w] : upto]
        self.sent[w] = max(self.sent[w], upto)
        partners = partner_arrays(self.pop, idx, self.start_epoch, self.meta) if len(idx) else None
        if chunk is not None or partners is not None:
            self.workers[w].put(Job(partners, chunk))


def run_load(pop, args, meta, tally, workers):
    """Generate and load everything through the workers (not committed yet)."""
    builder = JobBuilder(pop, args, meta, workers)
    reserver = NumberReserver(args.database, meta.name_keys)
    try:
        for chunk in generate_chunks(pop, args, meta, reserver, tally):
            builder.add(chunk)
    finally:
        reserver.close()
    for w, worker in enumerate(workers):
        builder.flush(w, final=True)
        worker.put(None)
    for worker in workers:
        worker.join()
    errors = [w.error for w in workers if w.error]
    if errors:
        raise GenerationError("loading failed:\n" + "\n".join(errors))


def backend_cpu_seconds(pid):
    """(CPU seconds, seconds spent runnable but waiting for a CPU) of a local PostgreSQL
    backend so far, from /proc/PID/schedstat; None when not readable (remote server)."""
    try:
        with open(f"/proc/{pid}/schedstat", encoding="ascii") as stat:
            on_cpu, waiting, _slices = (int(x) for x in stat.read().split())
        return on_cpu / 1e9, waiting / 1e9
    except (OSError, ValueError):
        return None


def stop_loaders(workers, commit):
    """Commit all the workers' transactions, or cancel and roll back all of them."""
    for worker in workers:
        if worker.backend_pid:
            worker.backend_cpu = backend_cpu_seconds(worker.backend_pid)
    if commit:
        for worker in workers:
            worker.cr.commit()
    else:
        workers[0].abort.set()
        for worker in workers:
            if worker.cr is not None:
                with contextlib.suppress(Exception):
                    worker.cr._cnx.cancel()
        for worker in workers:
            worker.join(timeout=120)
            if worker.cr is not None:
                with contextlib.suppress(Exception):
                    worker.cr.rollback()
    for worker in workers:
        if worker.cr is not None:
            with contextlib.suppress(Exception):
                worker.cr.close()


# --------------------------------------------------------------------------- after loading


def analyze(dbname):
    """ANALYZE the touched tables."""
    with contextlib.closing(open_cursor(dbname)) as cr:
        cr.execute("ANALYZE res_partner, sale_order, sale_order_line")
        cr.commit()


def sample_ids(cr, ranges, size, seed):
    """Up to ``size`` ids of generated orders, spread over the id ranges."""
    rng = seed_rng(seed, 4)
    candidates = np.concatenate(
        [rng.integers(lo, hi + 1, max(1, 2 * size // len(ranges))) for lo, hi in ranges]
    )
    cr.execute(
        SQL(
            "SELECT id FROM sale_order WHERE id = ANY(%s) ORDER BY id LIMIT %s",
            sorted(set(candidates.tolist())),
            size,
        )
    )
    return [row[0] for row in cr.fetchall()]


def recompute_mismatches(records, fnames):
    """Fields whose ORM recomputation differs from the stored value: {field: count}."""
    stored = {rec["id"]: rec for rec in records.read(fnames)}
    env = records.env
    for fname in fnames:
        env.add_to_compute(records._fields[fname], records)
    mismatches = {}
    for rec in records:
        for fname in fnames:
            old, new = stored[rec.id][fname], rec[fname]
            if isinstance(old, tuple):
                old = old[0]
            if hasattr(new, "ids"):
                new = new.ids[0] if new else False
            if isinstance(old, float) or isinstance(new, float):
                same = abs((old or 0.0) - (new or 0.0)) < 1e-6
            else:
                same = (old or False) == (new or False)
            if not same:
                mismatches[fname] = mismatches.get(fname, 0) + 1
    return mismatches


ORDER_CHECK_FIELDS = [
    "amount_untaxed",
    "amount_tax",
    "amount_total",
    "invoice_status",
    "currency_id",
    "require_signature",
    "require_payment",
    "prepayment_percent",
    "partner_invoice_id",
    "partner_shipping_id",
]
LINE_CHECK_FIELDS = [
    "price_subtotal",
    "price_total",
    "price_tax",
    "price_reduce_taxexcl",
    "price_reduce_taxinc",
    "qty_to_invoice",
    "untaxed_amount_to_invoice",
    "invoice_status",
    "qty_delivered_method",
    "customer_lead",
    "currency_id",
    "company_id",
    "order_partner_id",
    "salesman_id",
    "state",
]
PARTNER_CHECK_FIELDS = [
    "complete_name",
    "commercial_partner_id",
    "commercial_company_name",
    "email_normalized",
    "phone_sanitized",
]


def null_pattern_diff(cr, table, orm_id, gen_id):
    """Columns that are NULL in one of the two rows and not in the other."""
    orm_row, gen_row = fetch_rows(cr, table, [orm_id])[0], fetch_rows(cr, table, [gen_id])[0]
    return sorted(
        f"{col} (ORM {orm_row[col]!r} / generated {gen_row.get(col)!r})"
        for col in orm_row
        if (orm_row[col] is None) != (gen_row.get(col) is None)
    )


def verify(registry, meta, ranges, args):
    """Check generated data through the ORM; everything done here is rolled back."""
    report = {}
    with registry.cursor() as cr:
        env = api.Environment(cr, SUPERUSER_ID, {})
        ids = sample_ids(cr, ranges, args.sample, args.seed)
        orders = env["sale.order"].browse(ids)
        data = orders.read(["name", "amount_total", "partner_id", "order_line"])
        report["read"] = len(data)
        lines = orders.order_line
        partners = orders.partner_id
        fields = [f for f in PARTNER_CHECK_FIELDS if f in partners._fields]
        report["recompute"] = {
            "sale.order": recompute_mismatches(orders, ORDER_CHECK_FIELDS),
            "sale.order.line": recompute_mismatches(lines, LINE_CHECK_FIELDS),
            "res.partner": recompute_mismatches(partners, fields),
        }
        report["line_sum_mismatch"] = sum(
            1
            for o in orders
            if abs(sum(o.order_line.mapped("price_subtotal")) - o.amount_untaxed) > 1e-6
        )
        env.invalidate_all()
        report.update(orm_new_order(env, orders[:1], meta))
        cr.rollback()
    return report


def orm_new_order(env, sample, meta):
    """Create a partner and a confirmed order with the ORM and compare with generated rows."""
    gen = sample.sudo()
    company = gen.company_id
    user = gen.user_id or env.user
    partner = (
        env["res.partner"]
        .with_user(meta.admin_uid)
        .sudo()
        .create(
            {
                "name": "ORM Check",
                "email": "orm.check@example.com",
                "phone": gen.partner_id.phone or False,
                "customer_rank": 1,
                "is_company": gen.partner_id.is_company,
                "country_id": gen.partner_id.country_id.id,
                "company_id": gen.partner_id.company_id.id,
            }
        )
    )
    order = (
        env["sale.order"]
        .with_user(user)
        .sudo()
        .with_company(company)
        .create(
            {
                "partner_id": partner.id,
                "company_id": company.id,
                "order_line": [
                    Command.create({"product_id": int(meta.product_ids[0]), "product_uom_qty": 2})
                ],
            }
        )
    )
    order.action_confirm()
    env.flush_all()
    same_name = env["sale.order"].search_count([("name", "=", order.name)])
    cr = env.cr
    return {
        "new_order": f"{order.name} state={order.state} amount_total={order.amount_total}",
        "new_order_name_unique": same_name == 1,
        "null_diff": {
            "res_partner": null_pattern_diff(cr, "res_partner", partner.id, gen.partner_id.id),
            "sale_order": null_pattern_diff(cr, "sale_order", order.id, gen.id),
            "sale_order_line": null_pattern_diff(
                cr, "sale_order_line", order.order_line.id, gen.order_line[:1].id
            ),
        },
    }


def db_summary(dbname, ranges):
    """Per company counts of the generated orders as stored in the database."""
    lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
    with contextlib.closing(open_cursor(dbname)) as cr:
        cr.execute(
            SQL(
                "SELECT company_id, count(*), sum(amount_total), min(date_order), max(date_order)"
                " FROM sale_order WHERE id BETWEEN %s AND %s AND state = 'sale'"
                " GROUP BY company_id ORDER BY company_id",
                lo,
                hi,
            )
        )
        orders = cr.fetchall()
        cr.execute(
            SQL(
                "SELECT count(*) FROM sale_order_line WHERE order_id BETWEEN %s AND %s",
                lo,
                hi,
            )
        )
        lines = cr.fetchone()[0]
        cr.execute(SQL("SELECT pg_size_pretty(pg_database_size(current_database()))"))
        size = cr.fetchone()[0]
    return orders, lines, size


# --------------------------------------------------------------------------- report


def fmt_ts(unix_seconds):
    """Unix seconds as an ISO UTC datetime string."""
    return datetime.fromtimestamp(unix_seconds, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def print_report(args, meta, pop, tally, workers, verification, summary, phases):
    """Print what was generated, the true parameters, the checks and the timings."""
    out = print
    out("\n=== generated ===")
    out(
        f"customers: {args.customers:,}   orders: {sum(tally.orders.values()):,} "
        f"(requested {args.orders:,})   lines: {sum(tally.lines.values()):,}"
    )
    per_cust = tally.orders_per_customer
    out("per company:")
    for i, company in enumerate(meta.companies):
        n_partner = int((pop.partner_company == company.id).sum())
        n_cust = int(tally.bought_from[:, i].sum())
        out(
            f"  [{company.id}] {company.name}: customers buying {n_cust:,} "
            f"(partners owned {n_partner:,}), orders {tally.orders.get(company.id, 0):,}, "
            f"lines {tally.lines.get(company.id, 0):,}, "
            f"revenue {tally.revenue.get(company.id, 0.0):,.2f} {company.currency}"
        )
    out(
        f"  shared partners (company_id NULL): {int((pop.partner_company == 0).sum()):,}; "
        f"customers who bought from two companies: "
        f"{int((tally.bought_from.sum(axis=1) > 1).sum()):,}"
    )
    quant = np.percentile(per_cust, [50, 90, 99])
    inactive = float(np.mean(pop.span - tally.last_order > 365.0))
    out(
        f"orders per customer: min {per_cust.min()}, median {quant[0]:.0f}, "
        f"mean {per_cust.mean():.2f}, p90 {quant[1]:.0f}, p99 {quant[2]:.0f}, "
        f"max {per_cust.max()}; one-order customers {np.mean(per_cust == 1):.1%}"
    )
    out(f"customers whose last order is older than 1 year: {inactive:.1%}")
    out(f"date_order range (UTC): {fmt_ts(tally.first_ts)} .. {fmt_ts(tally.last_ts)}")
    out(f"order names: {', '.join(k.label for k in meta.name_keys)}")
    params = pop.params
    out("\n=== true generative parameters (time unit: days; alpha also in weeks) ===")
    out(
        f"BG/NBD: r={params['r']:g} alpha={params['alpha_days']:.6g} days "
        f"(={params['alpha_weeks']:.6g} weeks) a={params['a']:g} b={params['b']:g}"
    )
    out(
        f"Gamma-Gamma: p={params['p']:g} q={params['q']:g} v={params['v']:g} "
        f"(mean order value {params['p'] * params['v'] / (params['q'] - 1):.2f} "
        f"in {meta.companies[0].currency})"
        if params["q"] > 1
        else ""
    )
    out(
        f"simulated orders {pop.drawn_orders:,}; thinned {params['thinned']:,} repeat orders "
        f"({params['thinning_fraction']:.3%} of repeats) to hit exactly {args.orders:,} "
        f"(calibration attempt {params['attempts']}); "
        f"lines/order mean {args.lines_per_order:g}; seed {args.seed}; years {args.years:g}"
    )
    print_checks(verification, summary)
    print_fk_checks(workers)
    print_timings(workers, tally, phases)


def print_fk_checks(workers):
    """Print how the foreign keys were enforced."""
    plan = workers[0].shared.plan
    if not plan.replica:
        print(f"  foreign keys: enforced row by row by PostgreSQL's triggers ({plan.reason})")
        return
    n_fk = sum(len(fks) for fks in plan.foreign_keys.values())
    n_used = sum(max(w.fk_used.get(t, 0) for w in workers) for t in TARGET_TABLES)
    rows = {t: sum(w.fk_checked.get(t, 0) for w in workers) for t in TARGET_TABLES}
    print(
        f"  foreign keys: loaded with session_replication_role = replica; all {n_fk} foreign "
        f"keys checked set-based before commit ({n_used} set in the new rows, anti-joined; "
        f"the others NULL everywhere) on "
        + ", ".join(f"{n:,} {t} rows" for t, n in rows.items())
        + ": no orphan"
    )


def print_checks(verification, summary):
    """Print the database summary and the ORM checks."""
    orders, lines, size = summary
    print("\n=== database check ===")
    for company_id, count, total, first, last in orders:
        print(
            f"  company {company_id}: {count:,} confirmed orders, amount_total {total:,.2f}, "
            f"date_order {first} .. {last}"
        )
    print(f"  order lines: {lines:,}; database size: {size}")
    print("\n=== ORM check (rolled back) ===")
    print(
        f"  read {verification['read']} sampled orders "
        "(name, amount_total, partner_id, order_line): ok"
    )
    for model, mismatches in verification["recompute"].items():
        print(
            f"  recomputed stored fields of {model}: "
            f"{'all equal' if not mismatches else mismatches}"
        )
    print(f"  orders whose amount_untaxed != sum(lines): {verification['line_sum_mismatch']}")
    print(
        f"  new ORM order: {verification['new_order']}, "
        f"name unique: {verification['new_order_name_unique']}"
    )
    for table, diff in verification["null_diff"].items():
        print(
            f"  {table}: NULL-ness differs from an ORM-created row in: "
            f"{'; '.join(diff) if diff else 'no column'}"
        )


def print_timings(workers, tally, phases):
    """Print per phase and per step durations, and the memory peak."""
    print("\n=== timings ===")
    for label, seconds in phases.rows:
        print(f"  {label:<40} {seconds:8.1f}s")
    print(f"    (numpy order generation: {tally.gen_seconds:.1f}s in the main thread)")
    for worker in workers:
        steps = ", ".join(f"{k} {v:.1f}s" for k, v in sorted(worker.seconds.items()))
        print(
            f"    worker {worker.wid}: {worker.counts['partners']:,} partners, "
            f"{worker.counts['orders']:,} orders, {worker.counts['lines']:,} lines "
            f"in {len(worker.order_id_ranges)} chunks; {steps}"
        )
    usage = resource.getrusage(resource.RUSAGE_SELF)
    backends = [w.backend_cpu for w in workers]
    if all(stat is not None for stat in backends):
        load_wall = dict(phases.rows).get(LOAD_PHASE, 0.0)
        cpu = [on_cpu for on_cpu, _ in backends]
        queued = [waiting for _, waiting in backends]
        print(
            f"    loader backends: CPU {sum(cpu):.1f}s ({' + '.join(f'{c:.1f}' for c in cpu)}"
            f"; {sum(cpu) / max(load_wall, 1e-9):.2f} cores on average during the load), "
            f"runnable but waiting for a CPU {' + '.join(f'{q:.1f}' for q in queued)}s "
            f"(CPU taken by other processes, this one included: the load would take about "
            f"{load_wall - sum(queued) / len(queued):.0f}s without it); this script: CPU "
            f"{usage.ru_utime + usage.ru_stime:.1f}s"
        )
    print(f"  {'TOTAL':<40} {phases.total():8.1f}s   (peak RSS {usage.ru_maxrss / 1024:.0f} MiB)")


# --------------------------------------------------------------------------- main


def main(argv=None):
    """Entry point."""
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so that the dropped indexes are rebuilt
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    phases = Phases()
    now = (args.end or datetime.now(timezone.utc)).replace(tzinfo=None, microsecond=0)
    try:
        with phases("connect + metadata + ORM probes"):
            init_odoo(args)
            check_database(args.database)
            registry = Registry(args.database)
            meta = collect_metadata(registry, args, now)
        with phases("simulate customers + calibrate BG/NBD"):
            pop = draw_customers(args, meta, 365.25 * args.years)
            calibrate(pop, args)
        tally = Tally(args.customers, len(meta.companies))
        plan = load_plan(args.database, args.keep_fk_triggers)
        print(f"load mode: {'replica' if plan.replica else 'origin'} ({plan.reason})", flush=True)
        with phases("drop secondary indexes"):
            dropped, restore_file = (
                ([], None) if args.keep_indexes else drop_indexes(args.database, args, meta.probes)
            )
        if dropped:
            print(
                f"dropped {len(dropped)} secondary indexes, rebuilt after the load "
                f"(definitions saved in {restore_file})",
                flush=True,
            )
        try:
            workers = start_loaders(args, meta, plan)
            committed = False
            try:
                with phases(LOAD_PHASE):
                    run_load(pop, args, meta, tally, workers)
                with phases("commit"):
                    stop_loaders(workers, commit=True)
                    committed = True
            finally:
                if not committed:
                    stop_loaders(workers, commit=False)
        finally:
            if dropped:
                with phases("rebuild secondary indexes"):
                    rebuild_indexes(args.database, dropped, args.workers)
                os.unlink(restore_file)
        ranges = [r for w in workers for r in w.order_id_ranges]
        with phases("analyze"):
            analyze(args.database)
        with phases("verify (ORM + SQL summary)"):
            verification = verify(registry, meta, ranges, args)
            summary = db_summary(args.database, ranges)
    except GenerationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_report(args, meta, pop, tally, workers, verification, summary, phases)
    return 0


if __name__ == "__main__":
    sys.exit(main())
