"""envelopefsctl fsck (issue 15.5): a whole volume authenticated offline and online, each attack
of a lying storage host found with its plaintext path, leftovers found and removed by --repair
and nothing else, and a version-1 volume upgraded to version 2 (FORMAT.md, "Versioning").
Every test has its own host state directory, as a host of its own would."""
import hashlib
import json
import os
import re
import shutil
import subprocess
import threading

import pytest

from mounts import CTL, Volume, get, put

BLOCK = 4096
SEALED = BLOCK + 28
SLOT = 320  # header placement, local keyring, format 3 (docs/FORMAT.md, "Header slots")
HEADER = 2 * SLOT
LONG = "L" * 200          # a long name: stored as envelopefs.long.* with a side record
FAR = "/t/" + "x" * 3040  # too long for a version-2 link (the link store), not for version 1


@pytest.fixture(autouse=True)
def state(tmp_path, monkeypatch):
    path = tmp_path / "state"
    monkeypatch.setenv("ENVELOPEFS_STATE_DIR", str(path))
    return path


def fsck(target, *args):
    cp = subprocess.run([str(CTL), "fsck", "--json", *map(str, args), str(target)],
                        capture_output=True, text=True, timeout=300)
    assert cp.stdout, cp.stderr
    return cp.returncode, json.loads(cp.stdout)


def kinds(report, cls=None):
    return {(f["kind"], f["path"]) for f in report["findings"] if cls in (None, f["class"])}


def populate(mnt, names):
    """Every kind of object fsck checks."""
    os.makedirs(mnt / "d" / "e")
    data = {"d/f": os.urandom(10 * BLOCK + 5), "d/e/g": b"small", "empty": b""}
    data["d/" + LONG] = os.urandom(3 * BLOCK)
    for name, content in data.items():
        put(mnt / name, content)
    with open(mnt / "sparse", "wb") as f:
        f.write(b"a")
        f.seek(40 * BLOCK)
        f.write(b"b")
    os.link(mnt / "d" / "f", mnt / "hard")
    os.symlink("/etc/passwd", mnt / "d" / "near")
    os.symlink(FAR, mnt / "far")
    os.setxattr(mnt / "d" / "f", "user.colour", b"red")
    os.setxattr(mnt / "d", "user.tag", b"dir")
    return data


def make(tmp_path, name="v", names="encrypted", placement="header"):
    root = tmp_path / name
    root.mkdir()
    v = Volume(root, placement=placement, names=names)
    v.mount()
    try:
        populate(v.mnt, names)
    finally:
        v.unmount()
    return v


@pytest.mark.parametrize("names", ["encrypted", "plain"])
@pytest.mark.parametrize("placement", ["header", "xattr"])
def test_clean_volume(tmp_path, names, placement):
    v = make(tmp_path, names=names, placement=placement)
    rc, report = fsck(v.backing)
    assert rc == 0 and report["findings"] == [], report
    assert not report["online"]
    # d/f (and its hard link once), d/e/g, the long name, empty, sparse
    assert report["files"] == 5 and report["blocks"] >= 11 + 3 + 41, report
    if names == "encrypted":
        assert report["symlinks"] == 2 and report["xattrs"] == 2, report


# --- the attacks of tests/integration/test_integrity.py, and those on names --------------------

def flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x01]))


def zero(path, offset, length):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(bytes(length))


def entry_of(v, path):
    return v.backing_path(path)


def attack_zeroed_block(v):
    zero(entry_of(v, "d/f"), HEADER + 3 * SEALED, SEALED)
    return "block-zeroed", "/d/f"


def attack_zeroed_last_block(v):
    zero(entry_of(v, "d/f"), HEADER + 10 * SEALED, 5 + 28)  # the short last block: 5 bytes
    return "block-zeroed", "/d/f"


def attack_flipped_block(v):
    flip(entry_of(v, "d/f"), HEADER + 2 * SEALED + 100)
    return "block", "/d/f"


def attack_truncated_block(v):
    f = entry_of(v, "d/f")
    os.truncate(f, HEADER + 9 * SEALED + 20)  # 20 bytes of block 9 are left: too short for a block
    return "block-truncated", "/d/f"


def attack_tampered_record(v):
    flip(entry_of(v, "d/e/g"), 14 + 40)  # inside slot 0's record: its checksum fails
    return "record-corrupt", "/d/e/g"


def forge_record(path, edit):
    """Edit the current slot's record with @edit(bytearray) and seal the slot's checksum again,
    as a forger who knows the format (but no key) can."""
    with open(path, "r+b") as f:
        header = f.read(HEADER)
        at = max((int.from_bytes(header[i + 4:i + 12], "big"), i) for i in (0, SLOT)
                 if header[i:i + 4] == b"EFSL")[1]  # the valid slot of the higher sequence
        slot = bytearray(header[at:at + SLOT])
        length = int.from_bytes(slot[12:14], "big")
        record = bytearray(slot[14:14 + length])
        edit(record)
        slot[12:14] = len(record).to_bytes(2, "big")
        slot[14:SLOT - 16] = bytes(record) + bytes(SLOT - 30 - len(record))
        slot[SLOT - 16:SLOT] = hashlib.sha256(bytes(slot[:SLOT - 16])).digest()[:16]
        f.seek(at)
        f.write(slot)


def attack_forged_record_mac(v):
    forge_record(entry_of(v, "d/e/g"), lambda r: r.__setitem__(-1, r[-1] ^ 1))
    return "record-mac", "/d/e/g"


def attack_forged_holes(v):
    """A zeroed block made to look like a hole: a holes item added to the record."""
    f = entry_of(v, "d/f")
    zero(f, HEADER + 3 * SEALED, SEALED)

    def add_holes(r):
        n = r[26]
        at = 29 + n + int.from_bytes(r[27 + n:29 + n], "big")  # the extension's length
        assert r[4] == 2 and r[at + 1] != 1  # a version-2 record without a holes item
        item = bytes([1, 16]) + (3).to_bytes(8, "big") + (4).to_bytes(8, "big")
        r[at:at + 1] = bytes([r[at] + len(item)]) + item  # tag 1 comes first
    forge_record(f, add_holes)
    return "record-mac", "/d/f"


def attack_foreign_record(v):
    def other_keyring(r):
        ref = 27  # the key reference, "local:" and the keyring ID
        r[ref + 6] = ord("0") if r[ref + 6] != ord("0") else ord("1")
    forge_record(entry_of(v, "d/e/g"), other_keyring)
    return "record-foreign", "/d/e/g"


def attack_record_from_other_file(v):
    """A whole valid header copied from another file: it unwraps (it carries that file's ID),
    but this file's blocks do not open under it."""
    a, b = entry_of(v, "d/f"), entry_of(v, "d/e/g")
    with open(a, "rb") as f:
        header = f.read(HEADER)
    with open(b, "r+b") as f:
        f.write(header)
    return "block", "/d/e/g"


def attack_edited_config(v):
    conf = v.backing / "envelopefs.conf"
    conf.write_text(conf.read_text().replace("block_size = 4096", "block_size = 8192"))
    return "config-mac", None


def attack_forged_name(v):
    e = entry_of(v, "d/e/g")
    forged = e.with_name(e.name[:-1] + ("A" if e.name[-1] != "A" else "B"))
    os.rename(e, forged)
    return "name", None


def attack_moved_name(v):
    e = entry_of(v, "d/e/g")
    os.rename(e, e.parent.parent / e.name)  # into d: its name is sealed to d/e's ID
    return "name", None


def attack_lost_side_record(v):
    e = entry_of(v, "d/" + LONG)
    os.unlink(str(e) + ".name")
    return "long-name", None


def attack_lost_dirid(v):
    os.unlink(entry_of(v, "d/e") / "envelopefs.dirid")
    return "dirid", "/d/e"


def attack_tampered_symlink(v):
    link = entry_of(v, "d/near")
    text = os.readlink(link)
    os.unlink(link)
    os.symlink(text[:-2] + ("AA" if text[-2:] != "AA" else "BB"), link)
    return "symlink", "/d/near"


def attack_tampered_link_store(v):
    store = v.backing / "envelopefs.links"
    (name,) = os.listdir(store)
    flip(store / name, 40)
    return "symlink", "/far"


def attack_lost_link_store(v):
    store = v.backing / "envelopefs.links"
    (name,) = os.listdir(store)
    os.unlink(store / name)
    return "link-store", "/far"


def attack_tampered_xattr(v):
    f = entry_of(v, "d/f")
    (name,) = [n for n in os.listxattr(f) if n.startswith("user.") and n != "user.envelopefs.key"]
    value = bytearray(os.getxattr(f, name))
    value[-1] ^= 1
    os.setxattr(f, name, bytes(value))
    return "xattr-value", "/d/f"


def attack_copied_xattr(v):
    f, g = entry_of(v, "d/f"), entry_of(v, "d/e/g")
    (name,) = [n for n in os.listxattr(f) if n.startswith("user.") and n != "user.envelopefs.key"]
    os.setxattr(g, name, os.getxattr(f, name))
    return "xattr-name", "/d/e/g"


def attack_swapped_files(v):
    """Two files of one directory swapped under each other's names: each record binds its file
    to its own entry (format 3)."""
    a, b = entry_of(v, "d/f"), entry_of(v, "d/" + LONG)
    tmp = a.with_name("swap")
    os.rename(a, tmp)
    os.rename(b, a)
    os.rename(tmp, b)
    return "entry-binding", "/d/f"


ATTACKS = [attack_zeroed_block, attack_zeroed_last_block, attack_flipped_block, attack_truncated_block,
           attack_tampered_record, attack_forged_record_mac, attack_forged_holes,
           attack_foreign_record, attack_record_from_other_file, attack_edited_config,
           attack_forged_name, attack_moved_name, attack_lost_side_record, attack_lost_dirid,
           attack_tampered_symlink, attack_tampered_link_store, attack_lost_link_store,
           attack_tampered_xattr, attack_copied_xattr, attack_swapped_files]


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.__name__[7:] for a in ATTACKS])
def test_attack_found(tmp_path, attack):
    v = make(tmp_path)
    kind, path = attack(v)
    rc, report = fsck(v.backing)
    assert rc == 3, report
    found = kinds(report, "integrity")
    assert any(k == kind and (path is None or p == path) for k, p in found), (kind, path, found)
    # The daemon agrees: what fsck names fails through the mount too.
    if path and kind not in ("xattr-name", "block-truncated"):
        v.mount()
        try:
            with pytest.raises(OSError) as e:
                target = v.mnt / path.lstrip("/")
                if kind == "dirid":
                    os.listdir(target)
                elif kind.startswith("xattr"):
                    os.getxattr(target, "user.colour")
                elif os.path.islink(target):
                    os.readlink(target)
                else:
                    get(target)
            assert e.value.errno == 5  # EIO
        finally:
            v.unmount()


@pytest.mark.parametrize("placement", ["header", "xattr"])
def test_plain_names_attacks(tmp_path, placement):
    """Plain names: blocks and records, found by their (plain) path; an edited config is
    found against this host's pin."""
    v = make(tmp_path, names="plain", placement=placement)
    off = HEADER if placement == "header" else 0
    zero(v.backing / "d" / "f", off + 3 * SEALED, SEALED)
    flip(v.backing / "d" / "e" / "g", off + 5)
    rc, report = fsck(v.backing)
    assert rc == 3
    assert {("block-zeroed", "/d/f"), ("block", "/d/e/g")} <= kinds(report, "integrity"), report
    conf = v.backing / "envelopefs.conf"
    conf.write_text(conf.read_text().replace("block_size = 4096", "block_size = 8192"))
    rc, report = fsck(v.backing)
    assert rc == 3 and ("config-pin", None) in kinds(report, "integrity"), report


# --- leftovers ---------------------------------------------------------------------------------

def tree(root):
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            out.add(os.path.relpath(os.path.join(dirpath, n), root))
    return out


def test_leftovers_found_and_repaired(tmp_path):
    v = make(tmp_path)
    b = v.backing
    d = entry_of(v, "d")
    keep_dirid = os.readlink(b / "envelopefs.dirid")
    made = {
        # removable
        "orphan-side-record": d / ("envelopefs.long." + "A" * 43 + ".name"),
        "temp-entry": d / "envelopefs.tmp.1.2.3",
        "stale-probe": b / "envelopefs.probe" / "envelopefs.tmp.probe.0123456789abcdef",
        "orphan-link-store": b / "envelopefs.links" / ("B" * 21 + "A"),
        "rekey-journal-tmp": b / "envelopefs.rekey" / ("0" * 32 + ".tmp"),
    }
    os.symlink("A" * 300, made["orphan-side-record"])
    made["temp-entry"].mkdir()
    os.symlink(keep_dirid, made["temp-entry"] / "envelopefs.dirid")
    made["stale-probe"].mkdir(parents=True)
    (made["stale-probe"] / "probe-file").write_bytes(b"x")
    made["orphan-link-store"].write_bytes(os.urandom(40))
    (b / "envelopefs.rekey").mkdir(mode=0o700)
    made["rekey-journal-tmp"].write_bytes(os.urandom(100))
    # kept: a damaged journal (the daemon leaves it for a human), a temporary directory holding a
    # named entry, a stranger
    journal = b / "envelopefs.rekey" / ("1" * 32)
    journal.write_bytes(os.urandom(100))
    busy_tmp = d / "envelopefs.tmp.4.5.6"
    busy_tmp.mkdir()
    (busy_tmp / "SomeUserEntryName").write_bytes(b"data")
    stranger = d / "readme.txt"
    stranger.write_bytes(b"not ours")

    before = tree(b)
    rc, report = fsck(b)
    assert rc == 0, report
    left = {f["backing"]: f for f in report["findings"] if f["class"] == "leftover"}
    assert report["problems"] == 0, report
    for kind, path in made.items():
        assert left[str(path)]["kind"] == kind and left[str(path)]["removable"], left
    assert left[str(journal)]["kind"] == "rekey-journal-damaged"
    assert not left[str(journal)]["removable"]
    assert left[str(busy_tmp)]["kind"] == "temp-entry" and not left[str(busy_tmp)]["removable"]
    assert left[str(stranger)]["kind"] == "unknown-entry" and not left[str(stranger)]["removable"]
    assert tree(b) == before  # a check changes nothing

    rc, report = fsck(b, "--repair")
    assert rc == 0, report
    removed = {os.path.relpath(f["backing"], b) for f in report["findings"] if f["removed"]}
    assert removed == {os.path.relpath(p, b) for p in made.values()}
    gone = before - tree(b)
    assert all(any(g == r or g.startswith(r + "/") for r in removed) for g in gone), gone
    assert journal.exists() and busy_tmp.exists() and stranger.exists()

    os.unlink(journal)
    v.mount()
    try:
        assert get(v.mnt / "d" / "e" / "g") == b"small"
        assert os.readlink(v.mnt / "far") == FAR
    finally:
        v.unmount()


# --- online ----------------------------------------------------------------------------------

def test_online(tmp_path):
    v = make(tmp_path)
    v.mount()
    try:
        payload = os.urandom(64 * BLOCK)
        put(v.mnt / "busy", payload)
        for target in (v.mnt, v.backing):
            rc, report = fsck(target)
            assert rc == 0 and report["online"] and report["problems"] == 0, report
        for option in ("--repair", "--upgrade"):
            cp = subprocess.run([str(CTL), "fsck", option, str(v.mnt)], capture_output=True,
                                text=True)
            assert cp.returncode == 1 and "is mounted" in cp.stderr, cp.stderr
        assert get(v.mnt / "busy") == payload
    finally:
        v.unmount()


def test_online_while_writing(tmp_path):
    """Files appended to, rewritten and created while fsck runs are no problems."""
    v = make(tmp_path)
    v.mount()
    stop = threading.Event()
    errors = []

    def writer(n):
        try:
            chunk = os.urandom(3000)  # not block-aligned: the last block is re-sealed each time
            while not stop.is_set():
                with open(v.mnt / f"grow{n}", "ab") as f:
                    f.write(chunk)
                put(v.mnt / f"rewrite{n}", os.urandom(5 * BLOCK + 7))
        except OSError as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    try:
        for t in threads:
            t.start()
        for _ in range(5):
            rc, report = fsck(v.mnt)
            assert rc == 0 and report["problems"] == 0, report
    finally:
        stop.set()
        for t in threads:
            t.join()
        v.unmount()
    assert not errors
    flip(entry_of(v, "d/f"), HEADER + 100)
    v.mount()
    try:
        rc, report = fsck(v.mnt)
        assert rc == 3 and ("block", "/d/f") in kinds(report), report
    finally:
        v.unmount()


# --- upgrade ---------------------------------------------------------------------------------

@pytest.mark.parametrize("names", ["encrypted", "plain"])
def test_upgrade_version1(tmp_path, state, names):
    root = tmp_path / "v"
    root.mkdir()
    v = Volume(root, names=names)
    conf = v.backing / "envelopefs.conf"
    text = re.sub(r"^mac = .*\n", "", conf.read_text(), flags=re.M)
    conf.write_text(text.replace("format_version = 3", "format_version = 1"))
    shutil.rmtree(state)  # what a release before version 2 left: no pin
    v.mount()
    try:
        data = populate(v.mnt, names)
    finally:
        v.unmount()
    raw = v.backing_path("d/f").read_bytes()
    assert raw[14 + 4] == 1  # a version-1 record

    rc, report = fsck(v.backing, "--upgrade")
    assert rc == 0 and report["findings"] == [], report
    text = conf.read_text()
    assert "format_version = 3" in text  # its slots have format 3's room: through 2 to 3
    assert ("mac = " in text) == (names == "encrypted")
    assert (v.backing / "envelopefs.epoch").exists() == (names == "encrypted")
    again = subprocess.run([str(CTL), "fsck", "--upgrade", str(v.backing)], capture_output=True,
                           text=True)
    assert again.returncode == 1 and "already format version 3" in again.stderr

    v.mount()
    try:
        for name, content in data.items():
            assert get(v.mnt / name) == content, name
        assert os.readlink(v.mnt / "far") == FAR and os.readlink(v.mnt / "d" / "near") == "/etc/passwd"
        assert os.getxattr(v.mnt / "d" / "f", "user.colour") == b"red"
        put(v.mnt / "new", b"after the upgrade")
        os.symlink("/after", v.mnt / "newlink")
    finally:
        v.unmount()
    assert v.backing_path("new").read_bytes()[14 + 4] == 2  # new files get version-2 records
    assert v.backing_path("d/f").read_bytes()[14 + 4] == 1  # old ones keep theirs
    rc, report = fsck(v.backing)
    assert rc == 0 and report["findings"] == [], report


def test_upgrade_refused_on_problems(tmp_path, state):
    root = tmp_path / "v"
    root.mkdir()
    v = Volume(root, names="plain")
    conf = v.backing / "envelopefs.conf"
    conf.write_text(conf.read_text().replace("format_version = 3", "format_version = 1"))
    shutil.rmtree(state)
    v.mount()
    try:
        put(v.mnt / "f", os.urandom(4 * BLOCK))
    finally:
        v.unmount()
    flip(v.backing / "f", HEADER + 50)
    rc, report = fsck(v.backing, "--upgrade")
    assert rc == 3 and "format_version = 1" in conf.read_text()


def journal_header(old_id, new_id, size):
    """A re-key journal's header (docs/FORMAT.md, "Re-keying"), as the daemon writes it."""
    handle = bytes(8)
    head = (b"EFRJ" + bytes([1, 0, 0, 0]) + new_id + size.to_bytes(8, "big")
            + (1).to_bytes(4, "big") + len(handle).to_bytes(4, "big") + old_id + handle)
    head += bytes(4064 - len(head))
    return head + hashlib.sha256(head).digest()


def test_interrupted_rekey(tmp_path):
    """A record flagged mid re-key reads EIO: with the valid journal its file ID names, the next
    mount finishes it (a leftover, never removed); without one it is a problem."""
    v = make(tmp_path)
    g = entry_of(v, "d/e/g")
    with open(g, "rb") as f:
        file_id = f.read(SLOT)[14 + 6:14 + 22]
    forge_record(g, lambda r: r.__setitem__(5, 1))
    rc, report = fsck(v.backing)
    assert rc == 3 and ("record-rekeying", "/d/e/g") in kinds(report, "integrity"), report

    journals = v.backing / "envelopefs.rekey"
    journals.mkdir(mode=0o700)
    journal = journals / file_id.hex()
    journal.write_bytes(journal_header(bytes(16), file_id, 5) + bytes(4096))
    rc, report = fsck(v.backing, "--repair")
    assert rc == 0, report
    left = {(f["kind"], f["backing"], f["removed"]) for f in report["findings"]}
    assert ("rekey-journal", str(journal), False) in left, left
    assert ("rekey-in-progress", str(g), False) in left, left
    assert journal.exists()
