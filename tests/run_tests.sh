#!/usr/bin/env bash
# Runs the whole ecrm_addon test suite on a fresh database.
#
#   bash tests/run_tests.sh
#
# 1. checks that Odoo 18 can be imported and that PostgreSQL answers;
# 2. creates a fresh database, installs ecrm_addon with its demo data, then
#    upgrades it, and fails on any warning or error in Odoo's log;
# 3. runs every test (the addon's TransactionCase/HttpCase tests and the
#    cross-cutting tests in tests/) with pytest-odoo, HTTP server enabled;
# 4. fails when a test failed, when no test ran, or when any test was skipped.
#
# Environment: ECRM_TEST_DB (default ecrm_test), PYTHON (default python3),
# ODOO_ADDONS_PATH (extra addons folders, comma separated).
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
db=${ECRM_TEST_DB:-ecrm_test}
python=${PYTHON:-python3}
logdir=${ECRM_LOG_DIR:-$repo/.test-logs}
mkdir -p "$logdir"
# Odoo appends to its log files: start from empty ones, or an old warning fails this run.
rm -f "$logdir"/{install,upgrade,uninstall,concurrency-server}.log

die() {
    printf '\nERROR: %s\n' "$*" >&2
    exit 2
}

odoo_addons=$("$python" - <<'PY' 2>/dev/null
import os
import odoo
from odoo import release
assert release.version_info[0] == 18, release.version
print(os.path.join(os.path.dirname(odoo.__file__), "addons"))
PY
) || die "Odoo 18 cannot be imported by '$python'.
  Put an Odoo 18.0 source tree on python's path (a .pth file in site-packages
  naming the folder that holds odoo/) and install its requirements.txt, or use
  'docker compose up' (see README.md, 'Without Docker')."

"$python" - <<'PY' 2>/dev/null || die "PostgreSQL cannot be reached over its default socket as '$(whoami)'.
  Start it (Debian: pg_ctlcluster 15 main start) and create your role once:
  su postgres -c \"createuser -s $(whoami)\". Odoo refuses the role postgres."
import psycopg2
psycopg2.connect(dbname="postgres", connect_timeout=5).close()
PY

"$python" -c "import pytest_odoo" 2>/dev/null \
    || die "pytest-odoo is missing: pip install -r $repo/tests/requirements.txt"

addons_path="$odoo_addons,$repo${ODOO_ADDONS_PATH:+,$ODOO_ADDONS_PATH}"
odoo=("$python" -m odoo -d "$db" --addons-path="$addons_path" --stop-after-init
      --log-level=info)

check_log() {  # fail on any warning or error Odoo logged
    local log=$1 what=$2
    if grep -E '^[0-9-]+ [0-9:,]+ [0-9]+ (WARNING|ERROR|CRITICAL) ' "$log"; then
        die "$what logged warnings or errors (above; full log: $log)"
    fi
    echo "$what: no warning or error in $log"
}

"$python" - "$db" <<'PY' || die "could not drop the old test database '$db'"
import sys
import psycopg2
from psycopg2 import sql
conn = psycopg2.connect(dbname="postgres")
conn.autocommit = True
with conn.cursor() as cr:
    for name in (sys.argv[1], sys.argv[1] + "_lifecycle", sys.argv[1] + "_api"):
        cr.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name])
        cr.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
PY

echo "== installing ecrm_addon with demo data into a fresh database '$db'"
SECONDS=0
"${odoo[@]}" -i ecrm_addon --logfile="$logdir/install.log" \
    || die "installing ecrm_addon failed (log: $logdir/install.log)"
echo "installed in ${SECONDS}s"
check_log "$logdir/install.log" "install"

echo "== upgrading ecrm_addon (-u ecrm_addon)"
"${odoo[@]}" -u ecrm_addon --logfile="$logdir/upgrade.log" \
    || die "upgrading ecrm_addon failed (log: $logdir/upgrade.log)"
check_log "$logdir/upgrade.log" "upgrade"

# Copies for the uninstall test in tests/test_lifecycle.py and for the real server of
# tests/test_api_concurrency.py (a template cannot be copied while pytest uses it).
createdb -T "$db" "${db}_lifecycle" || die "could not copy '$db' for the lifecycle test"
createdb -T "$db" "${db}_api" || die "could not copy '$db' for the API concurrency test"
export ECRM_LIFECYCLE_DB="${db}_lifecycle" ECRM_API_DB="${db}_api" \
    ECRM_ADDONS_PATH="$addons_path" ECRM_LOG_DIR="$logdir"

echo "== running the test suite"
cd "$repo"
out="$logdir/pytest.out"
"$python" -m pytest -c tests/pytest.ini --rootdir="$repo" \
    --odoo-database="$db" --odoo-addons-path="$addons_path" --odoo-http \
    --odoo-log-level=warn "$@" 2>&1 | tee "$out"
status=${PIPESTATUS[0]}

summary=$(grep -E '^=+ .*(passed|failed|error|skipped|no tests ran).* =+$' "$out" | tail -1)
[ "$status" -eq 5 ] && die "no test was collected"
[ "$status" -ne 0 ] && die "the test suite failed (exit $status): $summary"
if grep -qE '[0-9]+ skipped' <<<"$summary"; then
    die "tests were skipped (see 'SKIPPED' above: a missing tool or flag): $summary"
fi
grep -qE '[0-9]+ passed' <<<"$summary" || die "no test passed: $summary"
echo "all tests passed: $summary"
