"""`envelopefsctl status --format prometheus` (issue 18): every status counter
in the Prometheus text exposition format, read back with the reference Python
parser (python3-prometheus-client), on real mounts; the alert rules of
docs/service.md name only metrics that exist and fire on a real KMS outage."""
import os
import re
import subprocess

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mounts import CTL, REPO, Volume, get, put
from test_vault import VaultVolume, write_unmounted
from vaultd import VaultServer

# Status fields that are identities, not measurements: envelopefs_info labels.
NOT_METRICS = {"daemon.pid", "backing_fs.fs_type"}


def prometheus(*mountpoints, check=True):
    cp = subprocess.run([str(CTL), "status", "--format", "prometheus", *map(str, mountpoints)],
                        capture_output=True, text=True, timeout=60)
    if check:
        assert cp.returncode == 0, cp.stderr
    return cp


def parse(text):
    """Families by name, after checking what the parser lets through: HELP and TYPE once
    per family, before its samples, which are all together."""
    seen, current = set(), None
    for line in text.splitlines():
        m = re.match(r"# (HELP|TYPE) (\S+) ", line)
        name = m.group(2) if m else re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{", line).group(1)
        if name != current:
            assert name not in seen, f"{name} is split: {line}"
            seen.add(name)
            current = name
            assert line.startswith("# HELP"), f"no HELP before {line}"
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for f in families.values():
        assert f.documentation and f.type in ("counter", "gauge"), f.name
    return families


def samples_of(families, mountpoint):
    return [s for f in families.values() for s in f.samples
            if s.labels["mountpoint"] == str(mountpoint)]


def leaves(obj, prefix=""):
    for k, v in obj.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from leaves(v, path + ".")
        else:
            yield path, v


@pytest.fixture
def vol(tmp_path):
    (tmp_path / "a").mkdir()
    v = Volume(tmp_path / "a")
    v.mount("dek_pool=2")
    yield v
    v.unmount()


def test_every_counter_parsed_and_labelled(vol):
    for i in range(3):
        put(vol.mnt / f"f{i}", b"x" * 5000)
    vol.remount()
    get(vol.mnt / "f0")
    status = vol.status()
    families = parse(prometheus(vol.mnt).stdout)
    samples = samples_of(families, vol.mnt)
    for s in samples:
        assert s.labels["volume"] == status["volume"]
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in samples}
    # Every numeric or boolean status field is one sample, besides up and info.
    measured = [p for p, v in leaves(status) if not isinstance(v, str) and p not in NOT_METRICS]
    assert len(samples) == len(measured) + 2
    labels = {"mountpoint": str(vol.mnt), "volume": status["volume"]}

    def value(name, **extra):
        return values[(name, tuple(sorted({**labels, **extra}.items())))]

    assert value("envelopefs_up") == 1
    info = [s for s in families["envelopefs_info"].samples if s.labels["mountpoint"] == str(vol.mnt)]
    assert info[0].labels["provider"] == "local" and info[0].labels["backing"] == str(vol.backing)
    assert value("envelopefs_dek_cache_misses_total") == status["cache"]["misses"] >= 1
    assert value("envelopefs_kms_operations_total", operation="unwrap") == status["kms"]["unwrap"]
    assert value("envelopefs_dek_pool_capacity") == 2
    assert value("envelopefs_writeback_cache") == 1
    assert value("envelopefs_backing_feature", feature="tmpfile") == \
        int(status["backing_fs"]["tmpfile"])
    assert value("envelopefs_integrity_errors_total") == 0


def test_integrity_error_counted(vol):
    put(vol.mnt / "f", os.urandom(10000))
    vol.unmount()
    with open(vol.backing / "f", "r+b") as f:
        f.seek(-100, os.SEEK_END)
        byte = f.read(1)
        f.seek(-100, os.SEEK_END)
        f.write(bytes([byte[0] ^ 1]))
    vol.mount()
    with pytest.raises(OSError):
        get(vol.mnt / "f")
    expected = vol.status()["errors"]["integrity"]
    families = parse(prometheus(vol.mnt).stdout)
    errors = [s.value for s in families["envelopefs_integrity_errors"].samples
              if s.labels["mountpoint"] == str(vol.mnt)]
    assert expected >= 1 and errors == [expected]  # the kernel may retry the read


def test_all_mounts_by_default_and_odd_mountpoints(tmp_path, vol):
    # A mountpoint needing every escape: quote, backslash, space (octal in /proc/self/mounts).
    (tmp_path / "b").mkdir()
    odd = Volume(tmp_path / "b")
    odd.mnt = tmp_path / 'b "q\\ x'
    odd.mnt.mkdir()
    # (mounts.is_mounted compares /proc/self/mounts fields unescaped: not usable here.)
    assert odd.mount(check=False).returncode == 0
    try:
        families = parse(prometheus().stdout)
        up = {s.labels["mountpoint"]: s.value for s in families["envelopefs_up"].samples}
        assert up[str(vol.mnt)] == 1 and up[str(odd.mnt)] == 1
    finally:
        subprocess.run(["fusermount3", "-u", str(odd.mnt)], check=True)


def test_named_mount_that_does_not_answer(tmp_path, vol):
    cp = prometheus(vol.mnt, tmp_path, check=False)
    assert cp.returncode == 1 and str(tmp_path) in cp.stderr
    up = {s.labels["mountpoint"]: s.value for s in parse(cp.stdout)["envelopefs_up"].samples}
    assert up == {str(vol.mnt): 1, str(tmp_path): 0}


def alert_rules():
    text = (REPO / "docs" / "service.md").read_text()
    block = re.search(r"```yaml\n(groups:.*?)```", text, re.S).group(1)
    return [r for g in yaml.safe_load(block)["groups"] for r in g["rules"]]


def test_alert_rules_fire_on_a_kms_outage(tmp_path):
    """Vault goes down: the breaker opens, KMS failures and key errors count, and the
    documented alert rules name exactly such metrics."""
    server = VaultServer(tmp_path / "vault")
    server.create_key("vol", derived=True)
    v = VaultVolume(tmp_path / "v", server, deadline_ms=1500)
    try:
        for name in ("c1", "c2", "c3", "c4"):
            write_unmounted(v, name, b"cold")
        v.mount()
        server.stop()
        for name in ("c1", "c2", "c3", "c4"):
            with pytest.raises(OSError):
                get(v.mnt / name)
        families = parse(prometheus(v.mnt).stdout)
    finally:
        v.unmount()
        server.stop()
    state = {s.labels["state"]: s.value for s in families["envelopefs_kms_breaker_state"].samples}
    assert state == {"closed": 0, "open": 1, "half-open": 0}
    assert families["envelopefs_kms_failures"].samples[0].value >= 3
    assert families["envelopefs_kms_service_failures"].samples[0].value >= 3
    names = {s.name for f in families.values() for s in f.samples}
    rules = alert_rules()
    assert {r["alert"] for r in rules} >= {"EnvelopefsIntegrityErrors", "EnvelopefsKmsFailures",
                                           "EnvelopefsKmsBreakerOpen", "EnvelopefsDekPoolDry",
                                           "EnvelopefsDown"}
    for rule in rules:
        for metric in re.findall(r"envelopefs_[a-z0-9_]+", rule["expr"]):
            assert metric in names, f"{rule['alert']}: no metric {metric}"


def test_timer_units_write_the_textfile(tmp_path, vol):
    """envelopefs-metrics.service's command, as systemd runs it (TEXTFILE_DIR from its
    Environment=, the build's envelopefsctl in place of the installed one), leaves a
    complete envelopefs.prom and no temporary file; both units verify."""
    units = tmp_path / "units"
    units.mkdir()
    service = (REPO / "tools" / "systemd" / "envelopefs-metrics.service.in").read_text()
    service = service.replace("@bindir@/envelopefsctl", str(CTL))
    (units / "envelopefs-metrics.service").write_text(service)
    timer = REPO / "tools" / "systemd" / "envelopefs-metrics.timer"
    (units / timer.name).write_text(timer.read_text())
    command = re.search(r"^ExecStart=/bin/sh -c '(.*)'$", service, re.M).group(1)
    default_dir = re.search(r"^Environment=TEXTFILE_DIR=(\S+)$", service, re.M).group(1)
    assert default_dir == "/var/lib/prometheus/node-exporter"  # Debian's node_exporter reads it
    out = tmp_path / "textfile"
    out.mkdir()
    subprocess.run(["/bin/sh", "-c", command], env={**os.environ, "TEXTFILE_DIR": str(out)},
                   check=True, timeout=60)
    assert os.listdir(out) == ["envelopefs.prom"]
    families = parse((out / "envelopefs.prom").read_text())
    assert str(vol.mnt) in {s.labels["mountpoint"] for s in families["envelopefs_up"].samples}
    verify = subprocess.run(["systemd-analyze", "verify", "--man=no", "envelopefs-metrics.timer"],
                            cwd=units, capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0 and verify.stderr == "", verify.stderr
