# SPDX-License-Identifier: MIT
"""Shared fixtures for the integration tests (stdlib only).

build_root  Path of the meson build directory: $ENVELOPEFS_BUILD_ROOT, else build/ in the repository.
ctl         Path of the built envelopefsctl.
run_ctl     run_ctl(*args, env=None, input=None, check=True) -> subprocess.CompletedProcess with bytes
            stdout/stderr.  The environment is the test's own minus any ENVELOPEFS_PASSPHRASE*, plus @env.
            With check=True a non-zero exit fails the test, showing stderr.
volume      Factory: volume(placement='header'|'xattr', block_size=4096, passphrase=None, names='plain')
            -> Volume, made
            with `envelopefsctl init` under tmp_path; its keyring lives next to, not inside, the backing dir.
"""

import dataclasses
import itertools
import os
import pathlib
import subprocess

import pytest

from mounts import BUILD


@dataclasses.dataclass
class Volume:
    backing: pathlib.Path
    keyring: pathlib.Path
    placement: str
    block_size: int
    passphrase: str | None
    init_output: str

    @property
    def env(self):
        """Environment a command on this volume needs (the passphrase, if any)."""
        return {"ENVELOPEFS_PASSPHRASE": self.passphrase} if self.passphrase else None

    def path(self, name):
        return self.backing / name


@pytest.fixture(scope="session", autouse=True)
def host_state(tmp_path_factory):
    """The daemons' and tools' per-host state (pinned configurations) in a directory of the session's own,
    not in /var/lib/envelopefs; tests about the state itself set $ENVELOPEFS_STATE_DIR per test."""
    if "ENVELOPEFS_STATE_DIR" not in os.environ:
        os.environ["ENVELOPEFS_STATE_DIR"] = str(tmp_path_factory.mktemp("host-state"))
    return os.environ["ENVELOPEFS_STATE_DIR"]


@pytest.fixture(scope="session")
def build_root():
    return BUILD


@pytest.fixture(scope="session")
def ctl(build_root):
    path = build_root / "tools" / "envelopefsctl"
    if not path.exists():
        pytest.fail(f"{path} does not exist: build first (ninja -C {build_root})")
    return path


@pytest.fixture(scope="session")
def run_ctl(ctl):
    def run(*args, env=None, input=None, check=True):
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("ENVELOPEFS_PASSPHRASE")}
        if env:
            full_env.update(env)
        if isinstance(input, str):
            input = input.encode()
        cp = subprocess.run([str(ctl), *map(str, args)], env=full_env, input=input,
                            capture_output=True, timeout=300)
        if check and cp.returncode != 0:
            raise AssertionError(
                f"envelopefsctl {' '.join(map(str, args))} exited {cp.returncode}:\n"
                f"{cp.stderr.decode(errors='replace')}")
        return cp
    return run


@pytest.fixture
def volume(tmp_path, run_ctl):
    counter = itertools.count()

    def make(placement="header", block_size=4096, passphrase=None, names="plain"):
        n = next(counter)
        backing = tmp_path / f"backing{n}"
        keydir = tmp_path / f"keys{n}"
        keydir.mkdir()
        keyring = keydir / "volume.keyring"
        env = {"ENVELOPEFS_PASSPHRASE": passphrase} if passphrase else None
        cp = run_ctl("init", "--keyring", keyring,
                     "--header", "file" if placement == "header" else "xattr",
                     "--block-size", block_size, "--names", names, backing, env=env)
        return Volume(backing, keyring, placement, block_size, passphrase, cp.stdout.decode())

    return make
