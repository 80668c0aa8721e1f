"""Real databases on envelopefs (issue 7, "Real applications").

PostgreSQL 15 runs as the postgres user on a root allow_other mount: initdb
with data checksums, pgbench, stop, unmount, remount, start, and the data is
checked by row counts, amcheck and pg_checksums.  SQLite runs a write-heavy
transaction workload while the daemon is killed with SIGKILL; after a
remount the database passes `PRAGMA integrity_check` and holds every
transaction whose COMMIT had returned.  (As in test_durability.py: a kill
of the daemon does not drop the backing page cache, so this shows that the
daemon loses nothing acknowledged and leaves nothing torn that SQLite's
journal cannot repair, not that the disk has it.)
"""
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mounts import Volume, is_mounted, unmount
from test_durability import daemon_pid

PG_BIN = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture
def shared_root():
    """pytest's tmp_path is root-only: the postgres user must reach the mount."""
    root = Path(tempfile.mkdtemp(prefix="envelopefs-apps-", dir="/var/tmp"))
    os.chmod(root, 0o755)
    yield root
    for sub in ("mnt", "mnt2"):
        if is_mounted(root / sub):
            unmount(root / sub)
    shutil.rmtree(root, ignore_errors=True)


def as_postgres(*args, check=True, timeout=120):
    proc = subprocess.run(["runuser", "-u", "postgres", "--", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd="/")
    if check:
        assert proc.returncode == 0, f"{args[0]}: {proc.stdout}\n{proc.stderr}"
    return proc


class Cluster:
    def __init__(self, data, sockdir, log):
        self.data, self.sockdir, self.log = data, sockdir, log

    def ctl(self, *args):
        return as_postgres(PG_BIN / "pg_ctl", "-D", self.data, "-l", self.log, "-w", *args,
                           check=False)

    def start(self):
        proc = self.ctl("-o", f"-c listen_addresses='' -k {self.sockdir}", "start")
        assert proc.returncode == 0, Path(self.log).read_text()

    def stop(self):
        proc = self.ctl("-m", "fast", "stop")
        assert proc.returncode == 0, proc.stderr

    def sql(self, query):
        return as_postgres(PG_BIN / "psql", "-h", self.sockdir, "-X", "-A", "-t", "-q",
                           "-v", "ON_ERROR_STOP=1", "-c", query, "postgres").stdout.strip()

    def pgbench(self, *args):
        return as_postgres(PG_BIN / "pgbench", "-h", self.sockdir, *args, "postgres").stdout


@pytest.mark.skipif(not (PG_BIN / "initdb").exists(), reason="postgresql-15 not installed")
def test_postgresql_pgbench_survives_remount(shared_root):
    pg = pwd.getpwnam("postgres")
    v = Volume(shared_root)
    v.mount("allow_other")
    sockdir = shared_root / "sock"
    sockdir.mkdir()
    os.chown(sockdir, pg.pw_uid, pg.pw_gid)
    log = shared_root / "pg.log"
    log.touch()
    os.chown(log, pg.pw_uid, pg.pw_gid)
    os.chmod(v.mnt, 0o755)
    data = v.mnt / "pgdata"
    data.mkdir(mode=0o700)
    os.chown(data, pg.pw_uid, pg.pw_gid)

    # --no-sync: initdb's closing sync of every file only costs time here;
    # the server's own checkpoints and WAL syncs run through the mount below.
    as_postgres(PG_BIN / "initdb", "--data-checksums", "--no-sync", "-A", "trust", "-U",
                "postgres", "-E", "UTF8", "--locale=C", "-D", data)
    # Everything initdb wrote belongs to postgres, through the mount and in the backing dir.
    owners = {os.lstat(Path(d) / n).st_uid for d, ds, fs in os.walk(data) for n in ds + fs}
    assert owners == {pg.pw_uid}
    assert os.stat(v.backing_path("pgdata")).st_uid == pg.pw_uid

    pgc = Cluster(data, sockdir, log)
    pgc.start()
    try:
        pgc.pgbench("-i", "-q", "-s", "1")
        out = pgc.pgbench("-c", "2", "-j", "2", "-T", "3", "-n")
        assert "number of failed transactions: 0" in out, out
        counts = pgc.sql("SELECT (SELECT count(*) FROM pgbench_accounts) || ' ' || "
                         "(SELECT count(*) FROM pgbench_history) || ' ' || "
                         "(SELECT sum(abalance) FROM pgbench_accounts)")
        accounts, history, balance = counts.split()
        assert int(accounts) == 100000 and int(history) > 0
    finally:
        pgc.stop()

    v.unmount()
    v.mount("allow_other")
    pgc.start()
    try:
        again = pgc.sql("SELECT (SELECT count(*) FROM pgbench_accounts) || ' ' || "
                        "(SELECT count(*) FROM pgbench_history) || ' ' || "
                        "(SELECT sum(abalance) FROM pgbench_accounts)")
        assert again.split() == [accounts, history, balance]
        pgc.sql("CREATE EXTENSION IF NOT EXISTS amcheck")
        # Every B-tree index checked page by page (a failure raises), then the heap.
        checked = pgc.sql("SELECT count(*) FROM (SELECT bt_index_check(c.oid, true) "
                      "FROM pg_class c JOIN pg_am a ON a.oid = c.relam "
                      "WHERE a.amname = 'btree' AND c.relpersistence = 'p') s")
        assert int(checked) > 0 and checked == pgc.sql("SELECT count(*) FROM pg_class c JOIN pg_am a ON a.oid = c.relam "
                              "WHERE a.amname = 'btree' AND c.relpersistence = 'p'")
        heap = pgc.sql("SELECT count(*) FROM verify_heapam('pgbench_accounts')")
        assert heap == "0"
    finally:
        pgc.stop()
    # Every data page's checksum, with the cluster stopped.
    out = as_postgres(PG_BIN / "pg_checksums", "--check", "-D", data).stdout
    assert "Bad checksums:  0" in out, out
    v.unmount()


# One transaction of the SQLite workload per loop: several rows of random
# size plus an update of a running total; the id is printed only once
# COMMIT has returned.
SQLITE_WORKLOAD = r"""
import os, sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA journal_mode=" + sys.argv[2])
db.execute("PRAGMA synchronous=FULL")
db.execute("CREATE TABLE IF NOT EXISTS tx (id INTEGER PRIMARY KEY, total INTEGER)")
db.execute("CREATE TABLE IF NOT EXISTS rows (tx INTEGER, n INTEGER, blob BLOB)")
db.execute("CREATE INDEX IF NOT EXISTS rows_tx ON rows (tx)")
i = 0
while True:
    i += 1
    db.execute("BEGIN IMMEDIATE")
    total = 0
    for n in range(1 + i % 7):
        blob = os.urandom(200 + (i * 7919 + n * 104729) % 9000)
        total += len(blob)
        db.execute("INSERT INTO rows VALUES (?, ?, ?)", (i, n, blob))
    db.execute("INSERT INTO tx VALUES (?, ?)", (i, total))
    if i % 10 == 0:
        db.execute("DELETE FROM rows WHERE tx = ?", (i - 5,))
        db.execute("UPDATE tx SET total = 0 WHERE id = ?", (i - 5,))
    db.execute("COMMIT")
    sys.stdout.write(f"{i}\n")
    sys.stdout.flush()
"""


@pytest.mark.parametrize("journal", ["wal", "delete"])
@pytest.mark.parametrize("writeback", [True, False], ids=["writeback", "direct"])
def test_sqlite_survives_daemon_kill_9(tmp_path, journal, writeback):
    v = Volume(tmp_path)
    settings = tmp_path / "daemon.ini"
    settings.write_text(f"[daemon]\nwriteback_cache = {'true' if writeback else 'false'}\n")
    v.mount(f"config={settings}")
    db = v.mnt / "app.db"
    worker = subprocess.Popen([sys.executable, "-c", SQLITE_WORKLOAD, str(db), journal],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    committed = []
    try:
        for line in worker.stdout:
            committed.append(int(line))
            if len(committed) == 150:
                # Mid-workload: the next transaction is in flight.
                os.kill(daemon_pid(v), signal.SIGKILL)
                break
        # Whatever the worker reports after the kill did not commit on the volume
        # (its writes now fail), but a COMMIT that had returned before the kill is
        # read up to the worker's end so that none is missed.
        committed += [int(line) for line in worker.stdout]
    finally:
        worker.kill()
        worker.wait()
    assert len(committed) >= 150
    unmount(v.mnt)
    v.mount(f"config={settings}")
    try:
        check = subprocess.run(["sqlite3", str(db), "PRAGMA integrity_check;"],
                               capture_output=True, text=True, timeout=60)
        assert check.stdout.strip() == "ok", check.stdout + check.stderr
        rows = subprocess.run(["sqlite3", str(db), "SELECT id, total FROM tx ORDER BY id;"],
                              capture_output=True, text=True, timeout=60, check=True).stdout
        present = {int(line.split("|")[0]) for line in rows.split()}
        assert present >= set(range(1, 151)), sorted(set(range(1, 151)) - present)[:10]
        # Each transaction's rows add up to its recorded total: no partial one.
        sums = subprocess.run(["sqlite3", str(db),
                               "SELECT count(*) FROM tx t WHERE t.total != "
                               "(SELECT coalesce(sum(length(blob)), 0) FROM rows r "
                               "WHERE r.tx = t.id);"],
                              capture_output=True, text=True, timeout=60, check=True).stdout
        assert sums.strip() == "0"
    finally:
        v.unmount()
