"""A real Odoo server on loopback for the API's concurrency test and benchmark.

Not a test module: ``tests/test_api_concurrency.py`` and ``tests/bench_api.py`` import it.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import psycopg2
import requests
from psycopg2 import sql

REPO = Path(__file__).resolve().parent.parent

# Runs in a subprocess against a database: makes an API user and key through the
# "Create API Access" wizard, as the admin would, and prints the key as JSON.
MAKE_KEY = """
import json, sys
from datetime import timedelta
import odoo
from odoo import fields
from odoo.tools import config
config.parse_config(sys.argv[1:])
name = "API bench"
registry = odoo.modules.registry.Registry(config["db_name"])
with registry.cursor() as cr:
    env = odoo.api.Environment(cr, odoo.SUPERUSER_ID, {})
    admin = env.ref("base.user_admin")
    Wizard = env["ecrm.api.access.wizard"].with_user(admin)
    login = Wizard.new({"name": name}).login
    wizard = Wizard.create({
        "name": name,
        "user_id": env["res.users"].search([("login", "=", login)]).id,
        "company_ids": [(6, 0, admin.company_id.ids)],
        "company_id": admin.company_id.id,
        "expiration_date": fields.Datetime.now() + timedelta(days=1),
    })
    action = wizard.action_create()
    print(json.dumps({"key": action["context"]["default_key"]}))
"""


def addons_path():
    path = os.environ.get("ECRM_ADDONS_PATH")
    if path:
        return path
    import odoo  # noqa: PLC0415 (only when the caller did not say)

    return f"{Path(odoo.__file__).parent / 'addons'},{REPO}"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_script(db, script, *args, timeout=600):
    """Run python ``script`` with Odoo's configuration for ``db``; return its stdout."""
    cmd = [
        sys.executable,
        "-c",
        script,
        f"--database={db}",
        f"--addons-path={addons_path()}",
        "--log-level=warn",
        *args,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode:
        raise RuntimeError(f"the script failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def make_api_key(db, name="API bench"):
    out = run_script(db, MAKE_KEY.replace('"API bench"', json.dumps(name)))
    return json.loads(out.strip().splitlines()[-1])["key"]


def install_database(db, log):
    """A new database with ecrm_addon and its demo data (a few minutes)."""
    cmd = [
        sys.executable,
        "-m",
        "odoo",
        f"--database={db}",
        f"--addons-path={addons_path()}",
        "--init=ecrm_addon",
        "--stop-after-init",
        "--log-level=warn",
        f"--logfile={log}",
    ]
    subprocess.run(cmd, check=True, timeout=1800)


def copy_database(template, target):
    drop_database(target)
    subprocess.run(["createdb", "-T", template, target], check=True, timeout=600)


@contextmanager
def api_database(tmp_path, prefix):
    """A database with ecrm_addon for one real-server test, dropped afterwards.

    A copy of ECRM_API_DB (tests/run_tests.sh hands over a freshly installed database,
    left as it is for the next test) or, without it, a new install (a few minutes).
    """
    db = f"{prefix}_{uuid.uuid4().hex[:8]}"
    template = os.environ.get("ECRM_API_DB")
    if template:
        copy_database(template, db)
    else:
        install_database(db, tmp_path / "install.log")
    try:
        yield db
    finally:
        drop_database(db)


def drop_database(db):
    conn = psycopg2.connect(dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cr:
        cr.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [db]
        )
        cr.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(db)))
    conn.close()


def process_tree(pid):
    """``pid`` and its descendants (from /proc)."""
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def memory_kib(pid, field):
    """Sum of ``field`` (VmRSS, VmHWM) in KiB over ``pid`` and its descendants."""
    total = 0
    for process in process_tree(pid):
        try:
            for line in Path(f"/proc/{process}/status").read_text().splitlines():
                if line.startswith(f"{field}:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


class OdooServer:
    """``python3 -m odoo`` serving ``db`` on 127.0.0.1, a free port, until stopped."""

    def __init__(self, db, log, workers=2, extra=()):
        self.db = db
        self.log = Path(log)
        self.workers = workers
        self.extra = list(extra)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self, timeout=180):
        cmd = [
            sys.executable,
            __file__,  # like odoo-bin, so that prefork can start its gevent process
            f"--database={self.db}",
            f"--db-filter=^{self.db}$",
            f"--addons-path={addons_path()}",
            "--http-interface=127.0.0.1",
            f"--http-port={self.port}",
            f"--gevent-port={free_port()}",
            f"--workers={self.workers}",
            "--max-cron-threads=0",
            "--log-level=warn",
            f"--logfile={self.log}",
            *self.extra,
        ]
        self.process = subprocess.Popen(cmd, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Odoo exited with {self.process.returncode}, see {self.log}")
            try:
                if requests.get(f"{self.url}/web/health", timeout=2).status_code == 200:
                    # One request whose path has three parts first: Odoo then reads every
                    # manifest (its lazy ``statics``) once. Concurrent first requests read
                    # them at once in several threads, and CPython 3.11.7's ast.parse is not
                    # thread-safe ("SystemError: AST constructor recursion depth mismatch",
                    # a 500 seen under load).
                    requests.get(f"{self.url}/web/static/warm-up", timeout=30)
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"Odoo did not answer within {timeout}s, see {self.log}")

    def stop(self):
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)

    def peak_rss_kib(self):
        return memory_kib(self.process.pid, "VmHWM")


@contextmanager
def odoo_server(db, log, workers=2, extra=()):
    server = OdooServer(db, log, workers=workers, extra=extra).start()
    try:
        yield server
    finally:
        server.stop()


if __name__ == "__main__":
    # python3 tests/ecrm_api_server.py <odoo options>: the Odoo server, as odoo-bin would
    # (with ``python3 -m odoo``, prefork restarts __main__.py as a script for gevent).
    if sys.argv[1:2] == ["gevent"]:
        # Prefork's websocket process, which the API does not use; where gevent cannot
        # monkey-patch (missing zope.interface metadata) it would crash and be respawned
        # every second. It idles until the server kills it, or dies with its parent.
        parent = os.getppid()
        while os.getppid() == parent:
            time.sleep(1)
    else:
        import odoo.cli

        odoo.cli.main()
