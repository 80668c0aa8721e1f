"""File content through a real mount: sizes, block edges, random model, sparse files."""
import errno
import os
import random

import pytest

from mounts import cvol, get as read_file, put as write_file, vol, hvol  # noqa: F401

BLOCK = 4096


@pytest.mark.parametrize("size", [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 1,
                                  1024 * 1024 + 17])
def test_round_trip_sizes(cvol, size):
    data = os.urandom(size)
    path = cvol.mnt / "f"
    write_file(path, data)
    assert os.stat(path).st_size == size
    assert read_file(path) == data
    cvol.remount()
    assert os.stat(path).st_size == size
    assert read_file(path) == data


def test_backing_size_follows_format(hvol):
    """Header + full blocks + a short last block: plaintext size from the backing size."""
    path = hvol.mnt / "f"
    write_file(path, b"x" * (2 * BLOCK + 10))
    backing = os.stat(hvol.backing_path("f")).st_size
    header = backing - (2 * (BLOCK + 28) + 10 + 28)
    assert header > 0 and header % 64 == 0 and header <= 1024
    write_file(hvol.mnt / "empty", b"")
    assert os.stat(hvol.backing_path("empty")).st_size == 0


def test_random_model(cvol):
    """Thousands of random writes, truncates and reads checked against a bytearray."""
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    model = bytearray()
    path = cvol.mnt / "model"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        for step in range(3000):
            op = rng.random()
            limit = 6 * BLOCK + 100
            if op < 0.55:
                off = rng.randrange(0, limit)
                n = rng.choice([1, 2, BLOCK - 1, BLOCK, BLOCK + 1, rng.randrange(1, 3 * BLOCK)])
                data = rng.randbytes(n)
                assert os.pwrite(fd, data, off) == n
                if off > len(model):
                    model.extend(bytes(off - len(model)))
                model[off:off + n] = data
            elif op < 0.7:
                size = rng.randrange(0, limit)
                os.ftruncate(fd, size)
                if size < len(model):
                    del model[size:]
                else:
                    model.extend(bytes(size - len(model)))
            else:
                off = rng.randrange(0, limit)
                n = rng.randrange(1, 3 * BLOCK)
                got = os.pread(fd, n, off)
                assert got == bytes(model[off:off + n]), f"seed={seed} step={step} read {off}+{n}"
            if step % 500 == 0:
                assert os.fstat(fd).st_size == len(model), f"seed={seed} step={step}"
        assert os.fstat(fd).st_size == len(model), f"seed={seed}"
    finally:
        os.close(fd)
    assert read_file(path) == bytes(model), f"seed={seed}"
    cvol.remount()
    assert read_file(path) == bytes(model), f"seed={seed} after remount"


def test_append(cvol):
    path = cvol.mnt / "log"
    with open(path, "ab") as f:
        for i in range(200):
            f.write(b"line %d\n" % i)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    os.pwrite(fd, b"tail\n", 0)
    os.close(fd)
    expected = b"".join(b"line %d\n" % i for i in range(200))
    data = read_file(path)
    # pwrite on an O_APPEND fd appends on Linux.
    assert data == expected + b"tail\n"


def test_o_trunc_keeps_working(vol):
    path = vol.mnt / "t"
    write_file(path, os.urandom(3 * BLOCK))
    write_file(path, b"short")
    assert read_file(path) == b"short"
    with open(path, "r+b") as f:
        f.truncate(0)
    assert read_file(path) == b""
    assert os.stat(path).st_size == 0


@pytest.fixture
def direct_vol(tmp_path):
    """Header placement with the writeback cache off: lseek answers come from the daemon."""
    from mounts import Volume
    v = Volume(tmp_path)
    settings = tmp_path / "daemon.ini"
    settings.write_text("[daemon]\nwriteback_cache = false\n")
    v.mount(f"config={settings}")
    yield v
    v.unmount()


def test_sparse_beyond_4g(direct_vol):
    hvol = direct_vol
    path = hvol.mnt / "sparse"
    with open(path, "wb") as f:
        f.truncate(10 * 1024**3)
    st = os.stat(hvol.backing_path("sparse"))
    assert st.st_blocks * 512 < 1024 * 1024, "truncate wrote data blocks"
    assert os.stat(path).st_size == 10 * 1024**3
    off = 5 * 1024**3 + 123
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(b"needle")
        f.seek(off - 10)
        assert f.read(26) == bytes(10) + b"needle" + bytes(10)
        f.seek(4 * 1024**3 - 5)
        assert f.read(10) == bytes(10)
    assert os.stat(path).st_size == 10 * 1024**3
    fd = os.open(path, os.O_RDONLY)
    try:
        data_at = os.lseek(fd, 0, os.SEEK_DATA)
        assert data_at <= off and off - data_at < 2 * BLOCK
        hole_at = os.lseek(fd, data_at, os.SEEK_HOLE)
        assert off < hole_at < off + 64 * 1024
        with pytest.raises(OSError) as e:
            os.lseek(fd, 10 * 1024**3 + 1, os.SEEK_DATA)
        assert e.value.errno == errno.ENXIO
    finally:
        os.close(fd)


def test_seek_data_never_hides_unflushed_data(hvol):
    """With the writeback cache, data still in the page cache is never reported as a hole."""
    fd = os.open(hvol.mnt / "wb", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, b"a" * BLOCK, 0)
        os.pwrite(fd, b"b" * BLOCK, 8 * 1024 * 1024)
        data_at = os.lseek(fd, 4 * BLOCK, os.SEEK_DATA)
        assert data_at <= 8 * 1024 * 1024
        assert os.lseek(fd, 0, os.SEEK_HOLE) >= BLOCK
    finally:
        os.close(fd)


def test_write_past_end_leaves_hole(cvol):
    path = cvol.mnt / "gap"
    write_file(path, b"abc")
    with open(path, "r+b") as f:
        f.seek(10 * BLOCK + 5)
        f.write(b"xyz")
    assert read_file(path) == b"abc" + bytes(10 * BLOCK + 2) + b"xyz"


def test_fallocate(vol):
    path = vol.mnt / "fa"
    write_file(path, b"0123456789")
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, 3 * BLOCK)
        assert os.fstat(fd).st_size == 3 * BLOCK
        assert os.pread(fd, 3 * BLOCK, 0) == b"0123456789" + bytes(3 * BLOCK - 10)
        # KEEP_SIZE (mode 1) through fallocate(2).
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.fallocate(fd, 1, ctypes.c_long(0), ctypes.c_long(8 * BLOCK)) == 0
        assert os.fstat(fd).st_size == 3 * BLOCK
        # PUNCH_HOLE|KEEP_SIZE zeroes, keeping the size.
        assert libc.fallocate(fd, 3, ctypes.c_long(2), ctypes.c_long(3)) == 0
        assert os.fstat(fd).st_size == 3 * BLOCK
        # Shifting content is not supported: a clear EOPNOTSUPP, not corruption (README.md).
        assert libc.fallocate(fd, 8, ctypes.c_long(0), ctypes.c_long(BLOCK)) == -1
        assert ctypes.get_errno() == errno.EOPNOTSUPP
    finally:
        os.close(fd)
    assert read_file(path) == b"01" + bytes(3) + b"56789" + bytes(3 * BLOCK - 10)


def test_mmap_shared_writable(cvol):
    import mmap
    path = cvol.mnt / "mm"
    write_file(path, bytes(3 * BLOCK))
    with open(path, "r+b") as f:
        m = mmap.mmap(f.fileno(), 3 * BLOCK)
        m[BLOCK - 2:BLOCK + 2] = b"MMAP"
        m.flush()
        m.close()
    cvol.remount()
    data = read_file(path)
    assert data[BLOCK - 2:BLOCK + 2] == b"MMAP"
    assert len(data) == 3 * BLOCK


@pytest.mark.parametrize("flag", [os.O_SYNC, os.O_DSYNC])
def test_sync_open_flags(vol, flag):
    path = vol.mnt / "s"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | flag, 0o600)
    os.write(fd, b"durable")
    os.close(fd)
    assert read_file(path) == b"durable"
