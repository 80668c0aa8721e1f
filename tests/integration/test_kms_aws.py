"""The aws KMS provider end to end: envelopefsctl init --kms aws, real mounts, rotation through
ReEncrypt, and a KMS outage in the middle of a workload.

The peer is moto_server with SigV4 checking on, behind a TCP proxy that can refuse or hang
(tests/kmsd/aws_moto.py); one per module, since moto takes seconds to start.
"""
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mounts import CTL, DAEMON, get_when_back, is_mounted, unmount

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kmsd"))
from aws_moto import AwsPeer  # noqa: E402
from kmsfault import timed_workload  # noqa: E402

# Small on purpose: an uncached open during an outage must fail within DEADLINE.
DEADLINE = 2.0
SETTINGS = {"region": "us-east-1", "deadline_ms": "2000", "timeout_ms": "700",
            "breaker_threshold": "2", "breaker_cooldown_ms": "1000"}


@pytest.fixture(scope="module")
def aws():
    peer = AwsPeer()
    yield peer
    peer.stop()


@pytest.fixture
def aws_env(aws, tmp_path):
    env = dict(os.environ, AWS_ACCESS_KEY_ID=aws.access_key, AWS_SECRET_ACCESS_KEY=aws.secret,
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"))
    env.pop("AWS_SESSION_TOKEN", None)
    env.pop("AWS_PROFILE", None)
    return env


def ctl(*args, env, check=False):
    return subprocess.run([str(CTL), *map(str, args)], capture_output=True, text=True,
                          env=env, check=check, timeout=300)


class AwsVolume:
    """A volume on the aws provider, its daemon in the foreground logging to a file."""

    def __init__(self, root, peer, env, key_arn=None, placement="file", endpoint=None):
        self.root, self.env = Path(root), env
        self.backing, self.mnt, self.log = self.root / "backing", self.root / "mnt", self.root / "log"
        self.backing.mkdir()
        self.mnt.mkdir()
        self.key_arn = key_arn or peer.key_arn
        # Plain names: the tests count KMS calls per file and read backing files by name.
        args = ["init", "--kms", "aws", "--names", "plain", "--header", placement,
                "--kms-setting", f"key_id={self.key_arn}",
                "--kms-setting", f"endpoint={endpoint or peer.endpoint}"]
        for k, v in SETTINGS.items():
            args += ["--kms-setting", f"{k}={v}"]
        r = ctl(*args, self.backing, env=env)
        assert r.returncode == 0, r.stderr
        self.proc = None

    def mount(self, prefetch=True):
        """Mount; @prefetch False: no DEK unwrapped ahead (a test of uncached files' failures)."""
        opts = []
        if not prefetch:
            conf = self.root / "daemon.ini"
            conf.write_text("[daemon]\nprefetch = false\n")
            opts = ["-o", f"config={conf}"]
        self.logf = open(self.log, "a")
        self.proc = subprocess.Popen([str(DAEMON), "-f", *opts, str(self.backing), str(self.mnt)],
                                     stdout=self.logf, stderr=self.logf, env=self.env)
        for _ in range(400):
            if is_mounted(self.mnt):
                return
            assert self.proc.poll() is None, self.log.read_text()
            time.sleep(0.05)
        raise AssertionError("mount did not come up: " + self.log.read_text())

    def unmount(self):
        unmount(self.mnt)
        if self.proc:
            self.proc.wait(timeout=30)
            self.proc = None
            self.logf.close()

    def status(self):
        return json.loads(os.getxattr(self.mnt, "trusted.envelopefs.status"))

    def log_lines(self, text):
        return [line for line in self.log.read_text().splitlines() if text in line]


@pytest.fixture
def avol(aws, aws_env, tmp_path):
    v = AwsVolume(tmp_path, aws, aws_env)
    v.mount()
    yield v
    v.unmount()


def write_files(m, n, size=10000):
    contents = {}
    for i in range(n):
        data = os.urandom(size + i)
        (m / f"f{i}").write_bytes(data)
        contents[f"f{i}"] = data
    return contents


def test_init_mount_write_remount_read(avol):
    # The secret is taken out of the daemon's environment once read (kms/envsecret.h).
    environ = Path(f"/proc/{avol.proc.pid}/environ").read_bytes()
    assert avol.env["AWS_SECRET_ACCESS_KEY"].encode() not in environ
    assert avol.env["AWS_ACCESS_KEY_ID"].encode() in environ  # an identifier, not a secret
    conf = (avol.backing / "envelopefs.conf").read_text()
    assert "provider = aws" in conf and avol.key_arn in conf
    assert os.environ.get("AWS_SECRET_ACCESS_KEY", "\0") not in conf
    assert avol.env["AWS_SECRET_ACCESS_KEY"] not in conf
    os.mkdir(avol.mnt / "d")
    contents = write_files(avol.mnt, 5)
    (avol.mnt / "d" / "inner").write_bytes(b"hello aws")
    status = avol.status()
    st = status["kms"]
    # Each new file took one key from the daemon's pool (or made on the spot); the pool's own
    # refills are the rest of the generate calls.
    assert status["pool"]["hits"] + status["pool"]["misses"] == 6
    assert st["provider"] == "aws" and st["generate"] >= 6 and st["current_version"] == 1
    assert st["service"]["calls"] >= 6 and st["service"]["breaker"] == "closed"
    avol.unmount()
    avol.mount()
    for name, data in contents.items():
        assert (avol.mnt / name).read_bytes() == data
    assert (avol.mnt / "d" / "inner").read_bytes() == b"hello aws"
    st = avol.status()["kms"]
    assert st["unwrap"] == 6 and st["failures"] == 0
    human = ctl("status", avol.mnt, env=avol.env)
    assert human.returncode == 0, human.stderr
    assert "kms service calls" in human.stdout and "breaker closed" in human.stdout
    # The backing files hold no plaintext.
    for name, data in contents.items():
        assert data[:64] not in (avol.backing / name).read_bytes()


def test_wrong_secret_refused_at_init_and_mount(aws, aws_env, tmp_path):
    bad = dict(aws_env, AWS_SECRET_ACCESS_KEY="wrong" + aws.secret[5:])
    (tmp_path / "b").mkdir()
    r = ctl("init", "--kms", "aws", "--kms-setting", f"key_id={aws.key_arn}",
            "--kms-setting", f"endpoint={aws.endpoint}", "--kms-setting", "region=us-east-1",
            tmp_path / "b", env=bad)
    assert r.returncode != 0
    assert "access denied" in r.stderr and bad["AWS_SECRET_ACCESS_KEY"] not in r.stderr
    (tmp_path / "v").mkdir()
    v = AwsVolume(tmp_path / "v", aws, aws_env)
    d = subprocess.run([str(DAEMON), str(v.backing), str(v.mnt)], capture_output=True,
                       text=True, env=bad, timeout=60)
    assert d.returncode != 0 and "access denied" in d.stderr
    assert not is_mounted(v.mnt)


def test_rotation_through_reencrypt(aws, aws_env, tmp_path):
    key = aws.create_key()  # its own key: rotations here do not move other tests' versions
    v = AwsVolume(tmp_path, aws, aws_env, key_arn=key)
    v.mount()
    try:
        contents = write_files(v.mnt, 12)
        assert aws.rotate(key) == 1
        time.sleep(1.1)  # the provider re-reads ListKeyRotations at most once a second
        check = ctl("rotate", "--check", "--json", v.mnt, env=v.env)
        assert check.returncode == 1, check.stderr
        assert json.loads(check.stdout)["target_version"] == 2
        run = ctl("rotate", "--json", v.mnt, env=v.env)
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["rewrapped"] == 12
        st = v.status()["kms"]
        # Cached DEKs vouched for the records; KMS re-encrypted: no unwrap, one ReEncrypt each.
        assert st["rewrap"] == 12 and st["unwrap"] == 0
        assert ctl("rotate", "--check", v.mnt, env=v.env).returncode == 0
        versions = {int(os.getxattr(v.mnt / n, "trusted.envelopefs.key").split()[0])
                    for n in contents}
        assert versions == {2}
        v.unmount()
        v.mount()
        for name, data in contents.items():
            assert (v.mnt / name).read_bytes() == data
        (v.mnt / "new").write_bytes(b"after rotation")
        assert int(os.getxattr(v.mnt / "new", "trusted.envelopefs.key").split()[0]) == 2
    finally:
        v.unmount()


def test_kms_outage_mid_workload(aws, avol):
    m = avol.mnt
    cached = write_files(m, 4)
    os.mkdir(m / "cold")
    for i in range(3):
        (m / "cold" / f"c{i}").write_bytes(b"cold %d" % i)
    avol.unmount()
    avol.mount(prefetch=False)  # else reading the cached files reads cold/ ahead too
    for name, data in cached.items():  # these DEKs are now cached
        assert (m / name).read_bytes() == data
    errors, stop = [], threading.Event()

    def reader():
        while not stop.is_set():
            for name, data in cached.items():
                try:
                    if (m / name).read_bytes() != data:
                        errors.append(f"{name}: wrong data")
                except OSError as e:
                    errors.append(f"{name}: {e}")

    t = threading.Thread(target=reader)
    t.start()
    try:
        aws.proxy.set_mode("down")
        t0 = time.monotonic()
        with pytest.raises(OSError) as e:
            (m / "cold" / "c0").read_bytes()
        took = time.monotonic() - t0
        assert e.value.errno == 5 and took < DEADLINE + 1.5, took
        # The KMS is now marked down: a second cold open fails fast; a new file still gets a
        # key, made ahead by the daemon's pool.
        with pytest.raises(OSError):
            (m / "cold" / "c1").read_bytes()
        (m / "fresh").write_bytes(b"x")
        assert (m / "fresh").read_bytes() == b"x"
        # A KMS that accepts connections and never answers: the deadline still bounds the call.
        aws.proxy.set_mode("hang")
        time.sleep(1.1)  # past the breaker's cool-down: the next call is a real probe
        t0 = time.monotonic()
        with pytest.raises(OSError):
            (m / "cold" / "c1").read_bytes()
        assert time.monotonic() - t0 < DEADLINE + 1.5
        time.sleep(0.5)
        assert not errors, errors[:5]
        aws.proxy.set_mode("up")
        for i in range(3):
            assert get_when_back(m / "cold" / f"c{i}") == b"cold %d" % i
        (m / "fresh").write_bytes(b"back")
        assert (m / "fresh").read_bytes() == b"back"
    finally:
        aws.proxy.set_mode("up")
        stop.set()
        t.join()
    assert not errors, errors[:5]
    assert len(avol.log_lines("unreachable")) == 1, avol.log.read_text()
    assert len(avol.log_lines("reachable again")) == 1, avol.log.read_text()
    svc = avol.status()["kms"]["service"]
    assert svc["breaker"] == "closed" and svc["breaker_opens"] == 1 and svc["retries"] > 0


def test_throttling_is_not_an_outage(aws, aws_env, tmp_path):
    """AWS's ThrottlingException (HTTP 400, from the throttling proxy in front of moto) under a
    workload of creates and cold opens: every operation ends within the deadline, succeeding or
    failing with EIO; the breaker stays closed and the log never calls KMS unreachable."""
    v = AwsVolume(tmp_path, aws, aws_env, endpoint=aws.throttle_endpoint)
    v.mount()
    try:
        cold = write_files(v.mnt, 8, size=3000)
        v.unmount()
        v.mount(prefetch=False)  # cold opens: none read ahead
        names = sorted(cold)
        created = {f"new{i}": os.urandom(2000) for i in range(12)}

        def cold_open(name):
            return lambda: (v.mnt / name).read_bytes() == cold[name] or pytest.fail(name)

        def create(name):
            def op():
                (v.mnt / name).write_bytes(created[name])
                assert (v.mnt / name).read_bytes() == created[name]
            return op

        before = aws.throttle.counters()["throttled"]
        # Half of all requests throttled: retried with backoff, most operations get through.
        aws.throttle.set(share=0.5)
        results = timed_workload([cold_open(n) for n in names[:4]] +
                                 [create(n) for n in created])
        # Every request throttled: cold opens fail with EIO at the deadline, never hang.
        aws.throttle.set(share=1.0)
        failed = timed_workload([cold_open(n) for n in names[4:]])
        aws.throttle.set(share=0.0)
        assert aws.throttle.counters()["throttled"] - before > 10
        print("throttled workload (ok, s):", results, "all throttled:", failed)
        # Each KMS call ends by DEADLINE; a failed read can ask twice (the open, then the
        # kernel's retry of the read), so a file operation ends by twice that.
        assert all(t < 2 * DEADLINE + 1.0 for _, t in results + failed), results + failed
        assert not any(ok for ok, _ in failed)
        assert sum(ok for ok, _ in results) >= len(results) // 2
        svc = v.status()["kms"]["service"]
        assert svc["breaker"] == "closed" and svc["breaker_opens"] == 0, svc
        assert svc["throttled"] > 0
        human = ctl("status", v.mnt, env=v.env)
        assert human.returncode == 0 and re.search(r"throttled [1-9]\d*,", human.stdout), human.stdout
        # Throttling over: everything reads back, no remount (after the 1 s in which a file
        # whose read found the KMS unavailable fails at once, fs/filekey.c).
        time.sleep(1.2)
        for name in names:
            assert (v.mnt / name).read_bytes() == cold[name]
        for name, data in created.items():
            if (v.mnt / name).exists() and (v.mnt / name).stat().st_size:
                assert (v.mnt / name).read_bytes() == data
    finally:
        aws.throttle.set(share=0.0)
        v.unmount()
    assert v.log_lines("unreachable") == [], v.log.read_text()


def test_blob_of_another_volume_and_a_disabled_key(aws, aws_env, tmp_path):
    """A backing file copied from another volume under the same AWS key does not open (its
    EncryptionContext names the other volume) and is left as it was; a volume whose key was
    disabled is refused at mount with AWS's reason, exit code 4, and nothing is mounted."""
    key = aws.create_key()  # its own key: disabling it touches no other test
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = AwsVolume(tmp_path / "a", aws, aws_env, key_arn=key)
    b = AwsVolume(tmp_path / "b", aws, aws_env, key_arn=key)
    a.mount()
    try:
        (a.mnt / "secret").write_bytes(b"volume a's data")
    finally:
        a.unmount()
    stolen = (a.backing / "secret").read_bytes()
    (b.backing / "secret").write_bytes(stolen)
    b.mount()
    try:
        with pytest.raises(OSError) as e:
            (b.mnt / "secret").read_bytes()
        assert e.value.errno == 5
        assert b.log_lines("cannot unwrap the data key"), b.log.read_text()
        assert b.status()["errors"]["key"] >= 1
    finally:
        b.unmount()
    assert (b.backing / "secret").read_bytes() == stolen

    aws.disable(key)
    d = subprocess.run([str(DAEMON), str(a.backing), str(a.mnt)], capture_output=True,
                       text=True, env=aws_env, timeout=60)
    assert d.returncode == 4, d.stderr
    assert "Disabled" in d.stderr, d.stderr
    assert not is_mounted(a.mnt)
