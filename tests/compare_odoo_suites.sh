#!/usr/bin/env bash
# Runs Odoo's own test suites of sale, mass_mailing, mass_mailing_sms and loyalty
# twice, in fresh databases without and with ecrm_addon, and compares the failing
# tests one by one. Fails when a test fails only with ecrm_addon installed.
#
#   bash tests/compare_odoo_suites.sh [module,module,...]
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3}
suites=${1:-sale,mass_mailing,mass_mailing_sms,loyalty}
logdir=${ECRM_LOG_DIR:-$repo/.test-logs}
mkdir -p "$logdir"
odoo_addons=$("$python" -c 'import odoo, os; print(os.path.dirname(odoo.__file__) + "/addons")') \
    || { echo "ERROR: Odoo 18 cannot be imported by $python (see README.md)" >&2; exit 2; }
tags=$(sed 's/\([^,]*\)/\/\1/g' <<<"$suites")

run_suites() {  # $1 database, $2 modules to install, $3 log file
    dropdb --if-exists "$1"
    "$python" -m odoo -d "$1" --addons-path="$odoo_addons,$repo" -i "$2" \
        --test-enable --test-tags="$tags" --stop-after-init --log-level=test \
        --logfile="$3" --http-port=18069
    dropdb --if-exists "$1"
}

failures() {  # the tests reported as FAIL or ERROR in an Odoo log: "module: Class.test", one per line
    grep -oE 'odoo\.addons\.[a-zA-Z0-9_.]+: (FAIL|ERROR): (Subtest )?[A-Za-z0-9_]+\.[A-Za-z0-9_]+' "$1" \
        | sed -E 's/: (FAIL|ERROR): (Subtest )?/: /' | sort -u
}

if [ -z "${ECRM_SUITES_REUSE_LOGS:-}" ]; then  # set it to compare the logs of an earlier run
    echo "== without ecrm_addon ($suites)"
    run_suites ecrm_suites_without "$suites" "$logdir/suites_without.log"
    echo "== with ecrm_addon"
    run_suites ecrm_suites_with "$suites,ecrm_addon" "$logdir/suites_with.log"
fi

failures "$logdir/suites_without.log" >"$logdir/suites_without.failures"
failures "$logdir/suites_with.log" >"$logdir/suites_with.failures"
for side in without with; do
    summary=$(grep -oE '[0-9]+ failed, [0-9]+ error\(s\) of [0-9]+ tests' "$logdir/suites_$side.log" | tail -1)
    echo "$side ecrm_addon: $(wc -l <"$logdir/suites_$side.failures") failing tests (${summary:-no summary line}; log: $logdir/suites_$side.log)"
done
new=$(comm -13 "$logdir/suites_without.failures" "$logdir/suites_with.failures")
fixed=$(comm -23 "$logdir/suites_without.failures" "$logdir/suites_with.failures")
echo "failing in both runs:"; comm -12 "$logdir/suites_without.failures" "$logdir/suites_with.failures" | sed 's/^/  /'
[ -n "$fixed" ] && { echo "failing only without ecrm_addon:"; sed 's/^/  /' <<<"$fixed"; }
if [ -n "$new" ]; then
    echo "FAILING ONLY WITH ecrm_addon:"; sed 's/^/  /' <<<"$new"
    exit 1
fi
echo "ecrm_addon breaks none of Odoo's tests in: $suites"
