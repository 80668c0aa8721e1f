"""Names, links, directories, special files, xattrs and locks through a real mount."""
import ctypes
import errno
import fcntl
import os
import socket
import stat
import subprocess
import sys

import pytest

from mounts import get, put, STATUS_XATTR, vol, hvol  # noqa: F401  (fixtures)

libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def renameat2(old, new, flags):
    ret = libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags)
    if ret != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def test_directories_and_listing(vol):
    m = vol.mnt
    os.makedirs(m / "a" / "b" / "c")
    names = {f"f{i:04d}" for i in range(300)}
    for n in names:
        put(m / "a" / n, n.encode())
    assert set(os.listdir(m / "a")) == names | {"b"}
    with os.scandir(m / "a") as it:
        for entry in it:
            if entry.name != "b":
                assert entry.stat().st_size == 5
    with pytest.raises(OSError) as e:
        os.rmdir(m / "a")
    assert e.value.errno == errno.ENOTEMPTY
    os.rmdir(m / "a" / "b" / "c")
    assert os.listdir(m / "a" / "b") == []
    assert os.stat(m / "a").st_nlink == 3


def test_volume_files_hidden_and_reserved(vol):
    assert os.listdir(vol.mnt) == []
    assert not os.path.exists(vol.mnt / "envelopefs.conf")
    if vol.names == "plain":
        with pytest.raises(OSError) as e:
            put(vol.mnt / "envelopefs.conf", b"x")
        assert e.value.errno == errno.EPERM
    else:
        # Encrypted names never contain '.', the volume's own always do: no collision.
        conf = (vol.backing / "envelopefs.conf").read_bytes()
        for own in ("envelopefs.conf", "envelopefs.key", "envelopefs.dirid", "envelopefs.links"):
            put(vol.mnt / own, b"x")
            assert get(vol.mnt / own) == b"x"
        assert (vol.backing / "envelopefs.conf").read_bytes() == conf
        vol.remount()
        assert sorted(os.listdir(vol.mnt)) == ["envelopefs.conf", "envelopefs.dirid",
                                               "envelopefs.key", "envelopefs.links"]
    # The name is only reserved in the root.
    os.mkdir(vol.mnt / "d")
    put(vol.mnt / "d" / "envelopefs.conf", b"fine")
    assert get(vol.mnt / "d" / "envelopefs.conf") == b"fine"


def test_hard_links_share_content_and_key(vol):
    m = vol.mnt
    os.mkdir(m / "d")
    put(m / "one", b"first")
    os.link(m / "one", m / "d" / "two")
    assert os.stat(m / "one").st_nlink == 2
    assert os.stat(m / "one").st_ino == os.stat(m / "d" / "two").st_ino
    with open(m / "d" / "two", "ab") as f:
        f.write(b" and more")
    assert get(m / "one") == b"first and more"
    os.unlink(m / "one")
    assert get(m / "d" / "two") == b"first and more"
    assert os.stat(m / "d" / "two").st_nlink == 1
    vol.remount()
    assert get(m / "d" / "two") == b"first and more"


def test_renames(vol):
    m = vol.mnt
    os.makedirs(m / "x" / "deep")
    os.mkdir(m / "y")
    put(m / "x" / "deep" / "f", b"payload")
    os.rename(m / "x", m / "y" / "x2")
    assert get(m / "y" / "x2" / "deep" / "f") == b"payload"
    put(m / "a", b"A")
    put(m / "b", b"B")
    with pytest.raises(OSError) as e:
        renameat2(m / "a", m / "b", RENAME_NOREPLACE)
    assert e.value.errno == errno.EEXIST
    renameat2(m / "a", m / "b", RENAME_EXCHANGE)
    assert get(m / "a") == b"B" and get(m / "b") == b"A"
    os.rename(m / "a", m / "b")  # replace
    assert get(m / "b") == b"B" and not os.path.exists(m / "a")
    vol.remount()
    assert get(m / "y" / "x2" / "deep" / "f") == b"payload"


def test_symlinks(vol):
    m = vol.mnt
    put(m / "target", b"t")
    os.symlink("target", m / "link")
    os.symlink("/nonexistent/" + "x" * 200, m / "dangling")
    assert os.readlink(m / "link") == "target"
    assert get(m / "link") == b"t"
    assert os.readlink(m / "dangling") == "/nonexistent/" + "x" * 200
    assert stat.S_ISLNK(os.lstat(m / "link").st_mode)
    os.utime(m / "link", (1000, 2000), follow_symlinks=False)
    assert os.lstat(m / "link").st_mtime == 2000


def test_special_files(vol):
    m = vol.mnt
    os.mkfifo(m / "fifo")
    assert stat.S_ISFIFO(os.stat(m / "fifo").st_mode)
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(m / "sock"))
    s.close()
    assert stat.S_ISSOCK(os.stat(m / "sock").st_mode)
    # A FIFO through the mount still works as a FIFO.
    pid = os.fork()
    if pid == 0:
        with open(m / "fifo", "wb") as f:
            f.write(b"through the pipe")
        os._exit(0)
    with open(m / "fifo", "rb") as f:
        assert f.read() == b"through the pipe"
    os.waitpid(pid, 0)


def test_attributes(vol):
    m = vol.mnt
    put(m / "f", b"abc")
    os.chmod(m / "f", 0o640)
    assert stat.S_IMODE(os.stat(m / "f").st_mode) == 0o640
    os.chown(m / "f", 1234, 5678)
    st = os.stat(m / "f")
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    os.utime(m / "f", ns=(1_000_000_123, 2_000_000_456))
    st = os.stat(m / "f")
    assert st.st_atime_ns == 1_000_000_123 and st.st_mtime_ns == 2_000_000_456
    os.truncate(m / "f", 2)
    assert get(m / "f") == b"ab"
    sv = os.statvfs(m)
    assert sv.f_bsize > 0 and sv.f_blocks > 0


def test_xattrs(vol):
    m = vol.mnt
    put(m / "f", b"data")
    os.setxattr(m / "f", "user.color", b"blue")
    os.setxattr(m / "f", "user.empty", b"")
    assert os.getxattr(m / "f", "user.color") == b"blue"
    assert set(os.listxattr(m / "f")) == {"user.color", "user.empty"}
    os.removexattr(m / "f", "user.color")
    assert os.listxattr(m / "f") == ["user.empty"]
    with pytest.raises(OSError) as e:
        os.getxattr(m / "f", "user.color")
    assert e.value.errno == errno.ENODATA
    os.mkdir(m / "d")
    os.setxattr(m / "d", "user.dir", b"yes")
    assert os.getxattr(m / "d", "user.dir") == b"yes"


def test_key_record_xattr_is_invisible(vol):
    m = vol.mnt
    put(m / "f", b"data")
    assert "user.envelopefs.key" not in os.listxattr(m / "f")
    with pytest.raises(OSError) as e:
        os.getxattr(m / "f", "user.envelopefs.key")
    assert e.value.errno == errno.ENODATA
    with pytest.raises(OSError) as e:
        os.setxattr(m / "f", "user.envelopefs.key", b"forged")
    assert e.value.errno == errno.EPERM
    with pytest.raises(OSError):
        os.removexattr(m / "f", "user.envelopefs.key")
    assert get(m / "f") == b"data"
    if vol.placement == "xattr":
        assert "user.envelopefs.key" in os.listxattr(vol.backing_path("f"))


def test_status_xattr_root_only(vol):
    status = vol.status()
    assert status["kms"]["provider"] == "local"
    assert "hits" in status["cache"]
    code = ("import os,sys\n"
            "try:\n os.getxattr(sys.argv[1], 'trusted.envelopefs.status')\n"
            "except OSError as e: print(e.errno)\n")
    out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                          sys.executable, "-c", code, str(vol.mnt)],
                         capture_output=True, text=True)
    assert out.stdout.strip() in (str(errno.EPERM), str(errno.EACCES), str(errno.ENODATA))


def test_locks(vol):
    path = vol.mnt / "lockfile"
    put(path, b"x")
    with open(path, "r+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        code = ("import fcntl,sys\nf=open(sys.argv[1],'r+b')\n"
                "try:\n fcntl.flock(f, fcntl.LOCK_EX|fcntl.LOCK_NB); print('got')\n"
                "except OSError: print('busy')\n"
                "try:\n fcntl.lockf(f, fcntl.LOCK_EX|fcntl.LOCK_NB, 1, 0); print('got')\n"
                "except OSError: print('busy')\n")
        fcntl.lockf(f, fcntl.LOCK_EX, 1, 0)
        out = subprocess.run([sys.executable, "-c", code, str(path)],
                             capture_output=True, text=True)
        assert out.stdout.split() == ["busy", "busy"]
        fcntl.flock(f, fcntl.LOCK_UN)
        fcntl.lockf(f, fcntl.LOCK_UN, 1, 0)
        out = subprocess.run([sys.executable, "-c", code, str(path)],
                             capture_output=True, text=True)
        assert out.stdout.split() == ["got", "got"]


def test_access(vol):
    m = vol.mnt
    put(m / "ro", b"x")
    os.chmod(m / "ro", 0o444)
    assert os.access(m / "ro", os.R_OK)
    assert not os.access(m / "ro", os.X_OK)
    assert os.access(m, os.W_OK | os.X_OK)


def test_fsync_file_and_dir(vol):
    m = vol.mnt
    fd = os.open(m / "f", os.O_RDWR | os.O_CREAT, 0o600)
    os.write(fd, b"x" * 10000)
    os.fsync(fd)
    os.fdatasync(fd)
    os.close(fd)
    dfd = os.open(m, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(dfd)
    os.close(dfd)
