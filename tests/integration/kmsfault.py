# SPDX-License-Identifier: MIT
"""Helpers for the KMS fault tests (test_kms_faults.py, test_kms_aws.py): a timed workload and a
foreground daemon with its log in a file."""
import concurrent.futures
import errno
import subprocess
import time

from mounts import DAEMON, is_mounted


def timed_workload(ops):
    """Run @ops (callables) on four threads; each must succeed or fail with EIO.  Returns
    [(ok, seconds)] in order."""
    def run(op):
        t0 = time.monotonic()
        try:
            op()
            return True, time.monotonic() - t0
        except OSError as e:
            assert e.errno == errno.EIO, e
            return False, time.monotonic() - t0
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        return list(pool.map(run, ops))


def start_daemon(backing, mnt, log, *options, env=None):
    """The daemon in the foreground (-f) on @mnt with -o @options, appending its messages to @log;
    returns its Popen once the mount is live."""
    args = [str(DAEMON), "-f"]
    for opt in options:
        args += ["-o", opt]
    with open(log, "ab") as out:
        daemon = subprocess.Popen(args + [str(backing), str(mnt)], stderr=out, env=env)
    deadline = time.monotonic() + 20
    while not is_mounted(mnt):
        assert daemon.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    return daemon
