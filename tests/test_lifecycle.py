"""Uninstalling ecrm_addon leaves no trace and logs no warning.

tests/run_tests.sh hands over a copy of the freshly installed and upgraded test
database in ECRM_LIFECYCLE_DB; without it, this test installs one itself.
"""

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import sql

from odoo.tools import config

UNINSTALL = """
import sys
import odoo
from odoo.tools import config
config.parse_config(sys.argv[1:])
registry = odoo.modules.registry.Registry(config["db_name"])
with registry.cursor() as cr:
    env = odoo.api.Environment(cr, odoo.SUPERUSER_ID, {})
    env["ir.module.module"].search([("name", "=", "ecrm_addon")]).button_immediate_uninstall()
"""
BAD_LOG_LINE = re.compile(r"^\S+ \S+ \d+ (WARNING|ERROR|CRITICAL) ", re.MULTILINE)


def _run_odoo(db, log, *args):
    addons_path = os.environ.get("ECRM_ADDONS_PATH") or config["addons_path"]
    cmd = [
        *args,
        f"--database={db}",
        f"--addons-path={addons_path}",
        "--log-level=info",
        f"--logfile={log}",
    ]
    subprocess.run([sys.executable, *cmd], check=True, timeout=1200)
    bad = BAD_LOG_LINE.findall(log.read_text())
    assert not bad, f"Odoo logged warnings or errors, see {log}"


@pytest.fixture
def lifecycle_db(tmp_path):
    db = os.environ.get("ECRM_LIFECYCLE_DB")
    created = not db
    if created:
        db = f"ecrm_lifecycle_{uuid.uuid4().hex[:8]}"
        _run_odoo(
            db, tmp_path / "install.log", "-m", "odoo", "-i", "ecrm_addon", "--stop-after-init"
        )
    yield db
    conn = psycopg2.connect(dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cr:
        cr.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [db]
        )
        cr.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(db)))
    conn.close()


def _query(db, query, params=None):
    with psycopg2.connect(dbname=db) as conn, conn.cursor() as cr:
        cr.execute(query, params)
        return cr.fetchall()


def test_uninstall_leaves_no_trace(lifecycle_db, tmp_path):
    log_dir = Path(os.environ.get("ECRM_LOG_DIR") or tmp_path)
    _run_odoo(lifecycle_db, log_dir / "uninstall.log", "-c", UNINSTALL)

    state = _query(lifecycle_db, "SELECT state FROM ir_module_module WHERE name = 'ecrm_addon'")
    assert state == [("uninstalled",)]
    assert _query(lifecycle_db, "SELECT model FROM ir_model WHERE model LIKE 'ecrm.%%'") == []
    assert (
        _query(
            lifecycle_db,
            "SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'ecrm\\_%%'",
        )
        == []
    )
    assert (
        _query(
            lifecycle_db,
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE column_name LIKE 'ecrm\\_%%'",
        )
        == []
    )
    assert _query(lifecycle_db, "SELECT id FROM ir_model_data WHERE module = 'ecrm_addon'") == []
    assert (
        _query(lifecycle_db, "SELECT indexname FROM pg_indexes WHERE indexname LIKE '%%ecrm%%'")
        == []
    )
    # The business data made by the demo stays: uninstalling must not delete orders.
    assert _query(lifecycle_db, "SELECT count(*) FROM sale_order")[0][0] > 0
