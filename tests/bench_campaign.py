#!/usr/bin/env python3
"""Benchmark of campaign preparation (issue: one-to-one campaigns).

Usage::

    python3 tests/bench_campaign.py -d ecrm_bench_scores --recipients 100000

Runs on a database with at least ``--recipients`` customers that have an email
(``tests/bench_scores.py`` prepares one). In one run, each in a transaction that is
rolled back, best of ``--rounds``:

- the campaign: a segment of ``--recipients`` customers, channels email then SMS
  then phone, a 10% holdout, a coupon per contacted customer; timed: preparation
  (recipients, holdout, contact pressure, channel choice under consent, coupons,
  skips logged) plus the send step's mailings and logged touches (no email leaves);
- the baseline: Odoo's own coupon generation wizard (``loyalty.generate.wizard``)
  making as many coupons for the same program.

Prints figures, never asserts timings.
"""

import argparse
import time
from pathlib import Path

import psycopg2

REPO = Path(__file__).resolve().parent.parent


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-d", "--database", default="ecrm_bench_scores")
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--addons-path", default=None)
    args = parser.parse_args()
    import odoo  # noqa: PLC0415
    from odoo import Command  # noqa: PLC0415
    from odoo.modules.registry import Registry  # noqa: PLC0415

    addons = args.addons_path or f"{Path(odoo.__file__).parent / 'addons'},{REPO}"
    odoo.tools.config.parse_config([f"--addons-path={addons}", "--log-level=warn"])
    registry = Registry(args.database)

    def setup(env):
        company = env.ref("base.main_company")
        env.cr.execute(
            "SELECT id FROM res_partner WHERE customer_rank > 0 AND email IS NOT NULL "
            "ORDER BY id LIMIT %s",
            [args.recipients],
        )
        ids = [row[0] for row in env.cr.fetchall()]
        program = env["loyalty.program"].create(
            {
                "name": "Bench coupon",
                "program_type": "coupons",
                "company_id": company.id,
                "trigger": "with_code",
                "reward_ids": [Command.create({"discount": 10})],
            }
        )
        return company, ids, program

    def campaign_round():
        with registry.cursor() as cr:
            env = odoo.api.Environment(cr, 2, {})
            company, ids, program = setup(env)
            # The id range is a cheap domain for the segment (the benchmark is not about
            # the segment search).
            segment = env["ecrm.segment"].create(
                {
                    "name": "Bench",
                    "company_id": company.id,
                    "domain": repr([("id", ">=", ids[0]), ("id", "<=", ids[-1]),
                                    ("customer_rank", ">", 0), ("email", "!=", False)]),
                }
            )  # fmt: skip
            channels = [
                env.ref(f"ecrm_addon.ecrm_channel_{code}") for code in ("email", "sms", "phone")
            ]
            campaign = env["ecrm.campaign"].create(
                {
                    "name": "Bench campaign",
                    "company_id": company.id,
                    "segment_id": segment.id,
                    "holdout_percent": 10,
                    "coupon_program_id": program.id,
                    "channel_line_ids": [
                        Command.create({"channel_id": channel.id, "sequence": index})
                        for index, channel in enumerate(channels)
                    ],
                    "email_body": "<p>Hello</p>",
                }
            )
            env.flush_all()
            start = time.perf_counter()
            campaign.action_prepare()
            prepared = time.perf_counter() - start
            campaign.action_send()
            env.flush_all()
            total = time.perf_counter() - start
            counts = env["ecrm.campaign.recipient"]._read_group(
                [("campaign_id", "=", campaign.id)], ["state"], ["__count"]
            )
            cards = env["loyalty.card"].search_count([("program_id", "=", program.id)])
            cr.rollback()
            return prepared, total, dict(counts), cards

    def wizard_round():
        # Odoo's codes ('044' + 9 hex digits of a uuid4) collide now and then at 100,000
        # coupons (about 7 % of runs): the wizard then fails; such a run is tried again.
        for _attempt in range(3):
            try:
                return wizard_attempt()
            except psycopg2.errors.UniqueViolation:
                print("  Odoo's coupon wizard drew a duplicate code: trying again", flush=True)
        raise RuntimeError("Odoo's coupon wizard failed three times")

    def wizard_attempt():
        with registry.cursor() as cr:
            env = odoo.api.Environment(cr, 2, {})
            _company, ids, program = setup(env)
            env.flush_all()
            start = time.perf_counter()
            wizard = (
                env["loyalty.generate.wizard"]
                .with_context(active_id=program.id)
                .create({"program_id": program.id, "coupon_qty": len(ids), "mode": "anonymous"})
            )
            wizard.generate_coupons()
            env.flush_all()
            elapsed = time.perf_counter() - start
            cards = env["loyalty.card"].search_count([("program_id", "=", program.id)])
            cr.rollback()
            return elapsed, cards

    campaign_best = wizard_best = None
    for index in range(args.rounds):
        prepared, total, counts, cards = campaign_round()
        wizard, wizard_cards = wizard_round()
        print(
            f"round {index + 1}: campaign prepare {prepared:6.2f} s, prepare + send "
            f"{total:6.2f} s ({counts}, {cards:,} coupons)   Odoo coupon wizard "
            f"{wizard:6.2f} s ({wizard_cards:,} coupons)",
            flush=True,
        )
        campaign_best = total if campaign_best is None else min(campaign_best, total)
        wizard_best = wizard if wizard_best is None else min(wizard_best, wizard)
    print(
        f"best: campaign {campaign_best:.2f} s for {args.recipients:,} recipients, "
        f"Odoo coupon wizard {wizard_best:.2f} s, ratio {campaign_best / wizard_best:.2f}"
    )


if __name__ == "__main__":
    main()
