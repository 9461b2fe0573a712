#!/usr/bin/env python3
"""Benchmark of segment counting and resolving (issue: permission marketing).

Usage::

    python3 tests/bench_segments.py -d ecrm_bench_scores

Runs on a database prepared by ``tests/bench_scores.py`` (customers, orders and a
published scoring run of the main company). For the ready-made segments and a
consent-based one it times, as the admin user with record rules:

- counting (``partner_count``, what the form shows),
- resolving (the ids, as a mailing or a mailing list needs them),
- freezing (the ids written into the segment's list, set-based),

best of 3 each, next to the bare SQL count of the same customers over the score
table (the floor). Prints figures, never asserts timings.
"""

import argparse
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def best_of(function, runs=3):
    best, result = None, None
    for _ in range(runs):
        start = time.perf_counter()
        result = function()
        elapsed = time.perf_counter() - start
        best = elapsed if best is None else min(best, elapsed)
    return best, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-d", "--database", default="ecrm_bench_scores")
    parser.add_argument("--addons-path", default=None)
    args = parser.parse_args()
    import odoo  # noqa: PLC0415
    from odoo.modules.registry import Registry  # noqa: PLC0415

    addons = args.addons_path or f"{Path(odoo.__file__).parent / 'addons'},{REPO}"
    odoo.tools.config.parse_config([f"--addons-path={addons}", "--log-level=warn"])
    registry = Registry(args.database)
    with registry.cursor() as cr:
        env = odoo.api.Environment(cr, 2, {})  # admin, with record rules
        company = env.ref("base.main_company")
        cr.execute("SELECT count(*) FROM res_partner WHERE customer_rank > 0")
        customers = cr.fetchone()[0]
        cr.execute("SELECT count(*) FROM ecrm_customer_score WHERE company_id = %s", [company.id])
        scored = cr.fetchone()[0]
        print(f"{customers:,} customers, {scored:,} scored in {company.name}")
        segments = env["ecrm.segment"].search([("company_id", "=", company.id)])
        segments |= env["ecrm.segment"].create(
            {
                "name": "Bench: everyone scored",
                "company_id": company.id,
                "domain": repr([("ecrm_score_id", "!=", False)]),
            }
        )
        for segment in segments:
            segment.invalidate_recordset()
            count_time, count = best_of(
                lambda segment=segment: segment._partners_model().search_count(
                    segment._get_partner_domain()
                )
            )
            resolve_time, _ids = best_of(
                lambda segment=segment: segment._partners_model()
                .search(segment._get_partner_domain())
                .ids
            )
            freeze_time, _ = best_of(lambda segment=segment: segment.action_freeze(), runs=1)
            segment.action_unfreeze()
            print(
                f"  {segment.name:<34} {count:>9,} customers   count {count_time:6.2f} s"
                f"   resolve {resolve_time:6.2f} s   freeze {freeze_time:6.2f} s"
            )
        floor_time, _ = best_of(
            lambda: cr.execute(
                "SELECT count(*) FROM ecrm_customer_score s JOIN ecrm_rfm_segment g "
                "ON g.id = s.segment_id WHERE s.company_id = %s AND g.code = 'champions'",
                [company.id],
            )
        )
        print(f"  floor: bare SQL count of the champions              {floor_time:6.2f} s")
        cr.rollback()


if __name__ == "__main__":
    main()
