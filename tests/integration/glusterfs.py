# SPDX-License-Identifier: MIT
"""A real GlusterFS on this machine, for the shared-storage tests and benches (stdlib only).

Several hosts running envelopefs on one GlusterFS volume are modelled by several client mounts
of one volume: each client is its own FUSE client process with its own kernel caches, and sees
the others' changes only through the volume (docs in the test file, test_shared.py).

    import glusterfs
    gd = glusterfs.Glusterd.start()               # the running glusterd, or one started here
    gv = glusterfs.GlusterVolume.create(gd, settings=glusterfs.COHERENT)
                                                  # replica 2, started, bricks below a tmp dir
    a, b = gv.mount_client("A"), gv.mount_client("B")
    glusterfs.init_volume(a / "vol", keyring, names="encrypted")
    ha = glusterfs.Host("A", a / "vol", mnt_a, keyring).mount("shared")
    hb = glusterfs.Host("B", b / "vol", mnt_b, keyring).mount("shared")   # no second init
    ...
    gv.destroy()      # envelopefs mounts below its directory, then the clients, stop, delete
    gd.stop()         # only a glusterd started here, and only once no volume is left on it

Everything of a volume lives below RUN_ROOT/<volume name>: bricks, client mountpoints, logs and
whatever mountpoints GlusterVolume.path() hands out.  Volume names are envfs_<pid>_<n>; a run
killed before its teardown is swept by the next one (GlusterVolume.sweep_stale(), called by
create()): its volumes, whose pid is gone, are stopped and deleted with everything mounted below
their directory.  Volumes of other names, and a glusterd not started here, are never touched.

Every failure raises GlusterError with the tail of the log that explains it.

GlusterFS's default client-side caches break close-to-open consistency between clients: measured
here, a plain client saw another client's in-place write of a 12 KiB file only after up to 10 s.
COHERENT is the set of volume options under which two plain clients see each other's closed
writes within about 1 s (test_shared.test_plain_gluster_clients_meet_the_bounds checks it):
write-behind off (its flush-behind lets close() return before the data left the client),
quick-read, io-cache and read-ahead off (they serve cached content).  The metadata cache
(stat-prefetch) must stay on: it is what drops a client's cached pages once another client
changed the file; with it off (as in GlusterFS's "db-workload" group) a plain client never saw
another's in-place overwrite.  But it must not keep what it caches (md-cache-timeout 0): a
client's md-cache can keep a directory's attributes from before its own rename for its timeout
and answer even a forced GETATTR with them (the namespace explorer caught an old parent's mtime
unchanged after a rename; both replica bricks held the new one).
"""
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("ENVELOPEFS_BUILD_ROOT", REPO / "build"))
DAEMON = BUILD / "fs" / "envelopefs"
CTL = BUILD / "tools" / "envelopefsctl"
STATUS_XATTR = "trusted.envelopefs.status"

RUN_ROOT = Path(tempfile.gettempdir()) / "envfs-gluster"
VOLUME_PREFIX = "envfs_"
GLUSTERD_LOG = Path("/var/log/glusterfs/glusterd.log")
BRICK_LOGS = Path("/var/log/glusterfs/bricks")
COHERENT = tuple((f"performance.{cache}", "off")
                 for cache in ("write-behind", "quick-read", "io-cache", "read-ahead")) + (
    ("performance.md-cache-timeout", "0"),)
# The CLI refuses while another transaction (another user's create or stop) holds the cluster
# lock; those are retried.
BUSY = re.compile(r"another transaction is in progress|locking failed|try again", re.I)


class GlusterError(RuntimeError):
    pass


def tail(path, lines=30):
    """The last @lines lines of @path, as a block for an error message."""
    try:
        with open(path, errors="replace") as f:
            text = f.readlines()[-lines:]
    except OSError as e:
        return f"--- {path}: {e.strerror}\n"
    return f"--- last {len(text)} lines of {path}:\n" + "".join(text)


def pid_alive(pid):
    """A running process (a zombie, which no one here may reap, is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def mounts():
    """[(source, mountpoint, fstype)] of this namespace, in mount order."""
    out = []
    def unescape(s):
        return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)
    with open("/proc/self/mounts") as f:
        for line in f:
            src, mnt, fstype = line.split()[:3]
            out.append((unescape(src), unescape(mnt), fstype))
    return out


def is_mounted(path):
    path = os.path.realpath(path)
    return any(m == path for _, m, _ in mounts())


def wait_unmounted(path, timeout):
    deadline = time.monotonic() + timeout
    while is_mounted(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def unmount(path, fuse=True):
    """Unmount @path: politely (fusermount3 -u for a FUSE mount of ours, umount otherwise),
    then lazily if it is busy.  True if it was mounted."""
    path = os.path.realpath(path)
    if not is_mounted(path):
        return False
    cmd = ["fusermount3", "-u", path] if fuse else ["umount", path]
    subprocess.run(cmd, capture_output=True, timeout=60)
    if not wait_unmounted(path, 5):
        subprocess.run(["umount", "-l", path], capture_output=True, timeout=60)
        wait_unmounted(path, 10)
    return True


def below(path, root):
    """@path is @root or below it."""
    path, root = str(path), str(root).rstrip("/")
    return path == root or path.startswith(root + "/")


def unmount_below(root):
    """Unmount every mount whose mountpoint or source lies below @root: envelopefs mounts first
    (they may sit on the others), then the rest, deepest first.  Envelopefs daemons of such
    mounts still alive afterwards are killed (they were started here, on paths below @root)."""
    root = os.path.realpath(root)
    found = [(s, m, t) for s, m, t in mounts() if below(m, root) or below(s, root)]
    first = [m for s, m, t in found if t == "fuse.envelopefs"]
    rest = sorted({m for s, m, t in found if t != "fuse.envelopefs"}, key=len, reverse=True)
    for m in reversed(first):
        unmount(m, fuse=True)
    kill_daemons_below(root)
    for m in rest:
        unmount(m, fuse=False)


def kill_daemons_below(root, grace=3.0):
    """SIGKILL envelopefs daemons (of this build or any) whose command line names a path below
    @root and that outlived their unmount by @grace seconds."""
    def daemons():
        out = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().decode(errors="replace").split("\0")
            except OSError:
                continue
            if argv and os.path.basename(argv[0]) == "envelopefs" and \
                    any(below(a, root) for a in argv[1:]) and pid_alive(int(pid)):
                out.append(int(pid))
        return out
    deadline = time.monotonic() + grace
    while daemons() and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in daemons():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def brick_host():
    """The name bricks are given: this machine's hostname (glusterd refuses localhost and
    127.0.0.1 as brick hosts).  It must resolve to an address of this machine; a container
    normally has it in /etc/hosts.  Nothing is added there: a name that does not resolve fails
    with what to do."""
    host = socket.gethostname()
    try:
        addrs = {a[4][0] for a in socket.getaddrinfo(host, None)}
    except socket.gaierror as e:
        raise GlusterError(
            f"the hostname {host!r} does not resolve ({e.strerror}): GlusterFS bricks are named "
            f"by it and may not be named localhost; add a line '127.0.1.1 {host}' to /etc/hosts")
    if not addrs:
        raise GlusterError(f"the hostname {host!r} resolves to no address")
    return host


class Glusterd:
    """The management daemon: the one running, or one started here (then `started`)."""

    def __init__(self, workdir=None):
        self.workdir = Path(workdir or RUN_ROOT / f"glusterd-{os.getpid()}")
        self.pidfile = self.workdir / "glusterd.pid"
        self.logfile = GLUSTERD_LOG
        self.pid = None
        self.started = False
        self.host = brick_host()

    def answers(self):
        try:
            cp = subprocess.run(["gluster", "--mode=script", "volume", "list"],
                                capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            return False
        return cp.returncode == 0

    @classmethod
    def start(cls, workdir=None, timeout=60):
        """The running glusterd, or one started here; GlusterError (with the tail of its log)
        if none answers."""
        gd = cls(workdir)
        if gd.answers():
            return gd
        try:
            gd._start(timeout)
        except GlusterError:
            # its log is in the message; nothing of it stays, not even a hung glusterd
            gd._kill_ours()
            shutil.rmtree(gd.workdir, ignore_errors=True)
            raise
        if not gd.started:
            shutil.rmtree(gd.workdir, ignore_errors=True)
        return gd

    def _kill_ours(self):
        try:
            pid = int(self.pidfile.read_text())
        except (OSError, ValueError):
            return
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)

    def _start(self, timeout):
        gd = self
        if not shutil.which("glusterd"):
            raise GlusterError("glusterd is not installed (apt-get install glusterfs-server "
                               "glusterfs-client)")
        gd.workdir.mkdir(parents=True, exist_ok=True)
        gd.logfile = gd.workdir / "glusterd.log"
        cp = subprocess.run(["glusterd", "-p", str(gd.pidfile), "-l", str(gd.logfile)],
                            capture_output=True, text=True, timeout=60)
        if cp.returncode != 0:
            if gd.answers():  # someone else's glusterd started meanwhile; ours gave way
                gd.logfile = GLUSTERD_LOG
                return gd
            raise GlusterError(f"glusterd exited {cp.returncode}: {cp.stderr.strip()}\n"
                               + tail(gd.logfile))
        deadline = time.monotonic() + timeout
        while not gd.answers():
            if time.monotonic() > deadline:
                raise GlusterError(f"glusterd does not answer `gluster volume list` after "
                                   f"{timeout} s\n" + tail(gd.logfile))
            time.sleep(0.2)
        try:
            pid = int(gd.pidfile.read_text())
        except (OSError, ValueError):
            pid = None
        # Another user may have started one at the same moment: ours then failed to bind and
        # exited, and theirs answers.  Only a live pid from our pid file is ours.
        if pid and pid_alive(pid):
            gd.pid, gd.started = pid, True
        else:
            gd.logfile = GLUSTERD_LOG
        return gd

    def log_tail(self, lines=30):
        return tail(self.logfile, lines)

    def cli(self, *args, timeout=120, check=True):
        """Run `gluster --mode=script ARGS`; retried while the cluster lock is busy."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                cp = subprocess.run(["gluster", "--mode=script", *map(str, args)],
                                    capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                raise GlusterError(f"gluster {' '.join(map(str, args))}: no answer within "
                                   f"{timeout} s\n" + self.log_tail())
            out = (cp.stdout + cp.stderr).strip()
            if cp.returncode == 0 or not check:
                return cp
            if BUSY.search(out) and time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            raise GlusterError(f"gluster {' '.join(map(str, args))} exited {cp.returncode}: "
                               f"{out}\n" + self.log_tail())

    def volumes(self):
        out = self.cli("volume", "list").stdout
        return [] if "No volumes present" in out else out.split()

    def stop(self):
        """End the glusterd started here, by its pid, once no volume is left on it (someone
        else's volumes need it: it is then left running).  A glusterd found running is never
        stopped.  True if it was stopped."""
        if not self.started or not pid_alive(self.pid):
            return False
        if self.answers() and self.volumes():
            return False
        os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while pid_alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(self.pid):
            os.kill(self.pid, signal.SIGKILL)
        self.started = False
        shutil.rmtree(self.workdir, ignore_errors=True)
        return True


class GlusterVolume:
    """One replica-2 volume with both bricks on this machine, and its client mounts."""
    _numbers = itertools.count()

    def __init__(self, glusterd, name):
        self.gd = glusterd
        self.name = name
        self.dir = RUN_ROOT / name
        self.bricks = [self.dir / "b1" / "brick", self.dir / "b2" / "brick"]
        self.logs = self.dir / "logs"
        self.clients = {}
        self._paths = itertools.count()

    @classmethod
    def create(cls, glusterd, replica=2, settings=()):
        """Make, start and return a new volume, with `gluster volume set` @settings (pairs,
        e.g. COHERENT) applied before it starts; fails loudly with the logs that tell why."""
        cls.sweep_stale(glusterd)
        while True:
            name = f"{VOLUME_PREFIX}{os.getpid()}_{next(cls._numbers)}"
            if not (RUN_ROOT / name).exists():
                break
        gv = cls(glusterd, name)
        gv.logs.mkdir(parents=True)
        bricks = [gv.dir / f"b{i + 1}" / "brick" for i in range(replica)]
        gv.bricks = bricks
        for b in bricks:
            b.parent.mkdir()
        try:
            glusterd.cli("volume", "create", name, "replica", replica,
                         *[f"{glusterd.host}:{b}" for b in bricks], "force")
            for key, value in settings:
                glusterd.cli("volume", "set", name, key, value)
            glusterd.cli("volume", "start", name)
            gv.wait_bricks_online()
        except GlusterError as e:
            logs = "".join(tail(BRICK_LOGS / (str(b).strip("/").replace("/", "-") + ".log"), 15)
                           for b in bricks)
            gv.destroy()
            raise GlusterError(f"{e}\n{logs}") from None
        return gv

    def wait_bricks_online(self, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            out = self.gd.cli("volume", "status", self.name, "detail").stdout
            online = re.findall(r"^Online\s*:\s*(\S+)", out, re.M)
            if len(online) == len(self.bricks) and all(o == "Y" for o in online):
                return
            if time.monotonic() > deadline:
                raise GlusterError(f"bricks of {self.name} not online after {timeout} s:\n{out}")
            time.sleep(0.3)

    @classmethod
    def sweep_stale(cls, glusterd):
        """Remove what runs killed before their teardown left: volumes named by this module
        whose process is gone, and their directories with everything mounted below them."""
        pattern = re.compile(rf"^{VOLUME_PREFIX}(\d+)_\d+$")
        live = set()
        for name in glusterd.volumes():
            m = pattern.match(name)
            if not m:
                continue
            if pid_alive(int(m.group(1))):
                live.add(name)
                continue
            stale = cls(glusterd, name)
            stale.destroy()
        if RUN_ROOT.exists():
            for d in RUN_ROOT.iterdir():
                m = pattern.match(d.name)
                if m and d.name not in live and not pid_alive(int(m.group(1))):
                    unmount_below(d)
                    shutil.rmtree(d, ignore_errors=True)
                m = re.match(r"^glusterd-(\d+)$", d.name)
                if m and not pid_alive(int(m.group(1))):
                    # A glusterd started by a dead run is left running (its volumes may be
                    # someone's now); only its pid file and log go once it has ended.
                    pidfile = d / "glusterd.pid"
                    try:
                        gpid = int(pidfile.read_text())
                    except (OSError, ValueError):
                        gpid = None
                    if not gpid or not pid_alive(gpid):
                        shutil.rmtree(d, ignore_errors=True)

    def mount_client(self, label, timeout=30):
        """Mount the volume as client @label ("A", "B", ...) at DIR/clients/LABEL and return
        that path once a file written through it can be read back."""
        mnt = self.dir / "clients" / label
        mnt.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"client-{label}.log"
        cp = subprocess.run(["mount", "-t", "glusterfs", "-o", f"log-file={log}",
                             f"{self.gd.host}:/{self.name}", str(mnt)],
                            capture_output=True, text=True, timeout=120)
        if cp.returncode != 0 or not is_mounted(mnt):
            raise GlusterError(f"mount -t glusterfs {self.gd.host}:/{self.name} {mnt} exited "
                               f"{cp.returncode}: {(cp.stdout + cp.stderr).strip()}\n" + tail(log))
        self.clients[label] = mnt
        probe = mnt / f".probe-{label}-{os.getpid()}"
        deadline = time.monotonic() + timeout
        err = "it reads back other bytes"
        while True:
            try:
                probe.write_bytes(b"probe")
                if probe.read_bytes() == b"probe":
                    probe.unlink()
                    return mnt
            except OSError as e:
                err = e
            if time.monotonic() > deadline:
                raise GlusterError(f"client {label} of {self.name} is mounted but not usable "
                                   f"after {timeout} s: {err}\n" + tail(log))
            time.sleep(0.2)

    def unmount_client(self, label):
        mnt = self.clients.pop(label)
        unmount_below(mnt)
        unmount(mnt, fuse=False)

    def path(self, label):
        """A fresh local directory below this volume's directory (not on the volume), e.g. for
        an envelopefs mountpoint: destroy() unmounts whatever is mounted there."""
        p = self.dir / "local" / f"{next(self._paths)}-{label}"
        p.mkdir(parents=True)
        return p

    def client_log_tail(self, label, lines=20):
        return tail(self.logs / f"client-{label}.log", lines)

    def destroy(self):
        """Unmount everything below the volume's directory (envelopefs mounts first), stop
        and delete the volume, remove its directory.  Safe to call twice; never raises for
        what is already gone."""
        if self.dir.exists():
            unmount_below(self.dir)
        # Also clients mounted elsewhere (none are, by this module; a stale run's maybe).
        for src, mnt, fstype in mounts():
            if fstype == "fuse.glusterfs" and src.endswith(f":/{self.name}"):
                unmount_below(mnt)
                unmount(mnt, fuse=False)
        self.clients = {}
        if self.gd.answers():
            info = self.gd.cli("volume", "info", self.name, check=False)
            if info.returncode == 0:
                if re.search(r"^Status:\s*Started", info.stdout, re.M):
                    self.gd.cli("volume", "stop", self.name, "force")
                self.gd.cli("volume", "delete", self.name)
        shutil.rmtree(self.dir, ignore_errors=True)


# --- envelopefs on a backing directory ------------------------------------------------------

def init_volume(backing, keyring, names="plain", placement="header", block_size=4096, env=None):
    """`envelopefsctl init` of @backing (created) with its keyring at @keyring: run once per
    volume, by one host."""
    header = "file" if placement == "header" else "xattr"
    cp = subprocess.run([str(CTL), "init", "--keyring", str(keyring), "--header", header,
                         "--block-size", str(block_size), "--names", names, str(backing)],
                        capture_output=True, text=True, env=env, timeout=120)
    if cp.returncode != 0:
        raise AssertionError(f"envelopefsctl init {backing} exited {cp.returncode}: {cp.stderr}")
    return cp.stdout


class Host:
    """One envelopefs daemon ("host") on an existing volume, through one path to its backing
    directory: the volume is never initialised here.  The interface of mounts.Volume (mnt,
    backing, keyring, names, placement, mount, unmount, remount, status, backing_path), so the
    explorers run on it."""

    def __init__(self, label, backing, mnt, keyring, names="plain", placement="header",
                 block_size=4096):
        self.label = label
        self.backing = Path(backing)
        self.mnt = Path(mnt)
        self.keyring = Path(keyring)
        self.names = names
        self.placement = placement
        self.block_size = block_size
        self.options = ()
        self.mnt.mkdir(parents=True, exist_ok=True)

    def __repr__(self):
        return f"Host({self.label}: {self.backing} on {self.mnt})"

    def mount(self, *options, check=True, env=None):
        """Run the daemon with `-o OPTION` each; it exits 0 once the mount is live."""
        self.options = options
        args = [str(DAEMON)]
        for opt in options:
            args += ["-o", opt]
        args += [str(self.backing), str(self.mnt)]
        proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
        if check and (proc.returncode != 0 or not is_mounted(self.mnt)):
            raise AssertionError(f"host {self.label}: {' '.join(args)} exited {proc.returncode}: "
                                 f"{proc.stderr.strip()}")
        return proc

    def unmount(self):
        unmount(self.mnt, fuse=True)
        kill_daemons_below(self.mnt, grace=10)

    def remount(self):
        self.unmount()
        self.mount(*self.options)

    def status(self):
        return json.loads(os.getxattr(self.mnt, STATUS_XATTR))

    def path(self, rel=""):
        return self.mnt / rel if rel else self.mnt

    def backing_path(self, name):
        """Backing file of a plaintext path relative to the mount."""
        if self.names == "plain":
            return self.backing / name
        parent, _, base = name.rpartition("/")
        out = subprocess.run([str(CTL), "ls", "--backing", str(self.backing), parent or "/"],
                             check=True, capture_output=True, text=True).stdout
        for line in out.splitlines():
            shown, path = line[2:].split("\t")
            if shown == base:
                return Path(path)
        raise FileNotFoundError(name)
