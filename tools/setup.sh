#!/usr/bin/env bash
# envelopefs set-up on Debian 12, as root (or through sudo).
#
#   tools/setup.sh quickstart   install what is missing, build, install, create a volume on the
#                               local keyring and mount it
#   tools/setup.sh test         install what is missing, build warning-free (-Werror), run the unit
#                               and integration tests, then rebuild with AddressSanitizer + UBSan
#                               and run the tests again against the sanitized binaries
#
# Environment: ENVELOPEFS_HOME (quickstart: where the volume goes, default /var/lib/envelopefs-demo),
# JOBS (build parallelism).
set -euo pipefail

cd "$(dirname "$0")/.."
SRC=$(pwd)

BUILD_PKGS="meson ninja-build pkg-config gcc libfuse3-dev fuse3 libssl-dev libcurl4-openssl-dev libiniparser-dev
	libp11-kit-dev scdoc"
# The man pages' reader, for `man envelopefs` after the quickstart.
QUICKSTART_PKGS="man-db"
# The KMS peers and clients (SoftHSM2, hvac, boto3, PyKMIP's server and client), the applications the suite runs on a mount,
# and the shared backings (GlusterFS, bindfs).
TEST_PKGS="python3-pytest attr util-linux procps python3-cryptography python3-hvac python3-boto3 openssl
	softhsm2 opensc sqlite3 postgresql postgresql-contrib rsync strace
	glusterfs-server glusterfs-client bindfs
	groff-base mandoc python3-prometheus-client python3-yaml systemd
	build-essential debhelper dpkg-dev fakeroot lintian
	python3-pykmip"
# (groff-base and mandoc lint the man pages; python3-prometheus-client parses the metrics;
# systemd-analyze verifies the units;
# debhelper, dpkg-dev, fakeroot and lintian build and check the Debian package.)
# The Azure and Google Cloud peers' official clients (azure.keyvault.keys + azure.identity; google-auth).
TEST_PKGS="$TEST_PKGS python3-azure python3-google-auth"

die() { echo "setup: $*" >&2; exit 1; }

# The explorers on other backing file systems (test_other_backings.py): XFS and Btrfs on loop devices.
TEST_PKGS="$TEST_PKGS xfsprogs btrfs-progs"

# The vendors' official Node clients that prove the Azure and Google Cloud peers (test_kms_cloud_clients.py):
# Node.js here, npm and the pinned npm packages in install_node_clients.
TEST_PKGS="$TEST_PKGS nodejs"

# GNU time: the peak RSS of fsck and rotate on small and large trees (test_walk_bound.py).
TEST_PKGS="$TEST_PKGS time"

install_packages() {
	local missing=()
	for p in "$@"; do
		dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	[ "$(id -u)" -eq 0 ] || die "missing packages (${missing[*]}): run as root or through sudo"
	echo "setup: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y --no-install-recommends "${missing[@]}" </dev/null ||
		{ apt-get update </dev/null && apt-get install -y --no-install-recommends "${missing[@]}" </dev/null; }
}

# build DIR [meson options...]: configure once, then compile.
build() {
	local dir=$1; shift
	[ -f "$dir/build.ninja" ] || meson setup "$dir" "$@" >/dev/null
	meson configure "$dir" "$@" >/dev/null
	ninja -C "$dir" ${JOBS:+-j "$JOBS"}
}

quickstart() {
	install_packages $BUILD_PKGS $QUICKSTART_PKGS
	build build --buildtype=release -Dwerror=true
	meson install -C build --quiet
	local home=${ENVELOPEFS_HOME:-/var/lib/envelopefs-demo}
	mkdir -p "$home/backing" "$home/plain"
	chmod 700 "$home"
	if [ ! -f "$home/backing/envelopefs.conf" ]; then
		envelopefsctl init --keyring "$home/keyring" "$home/backing"
	fi
	if ! mountpoint -q "$home/plain"; then
		envelopefs "$home/backing" "$home/plain"
	fi
	cat <<MSG

envelopefs is mounted.
  plaintext view:  $home/plain      (write your files here)
  ciphertext:      $home/backing
  keyring:         $home/keyring    (back it up: without it the data is lost)
Unmount:  fusermount3 -u $home/plain
Mount again:  envelopefs $home/backing $home/plain
Manuals:  man envelopefs, man envelopefsctl, man envelopefs.conf
MSG
}

# Count test cases from a meson test log: each unit program's and pytest's
# own "N passed, N failed" line; a program that died without one counts as
# one failure.
summarize() {
	/usr/bin/python3 - "$1" <<'PY'
import json, re, sys
ok = bad = 0
for line in open(sys.argv[1]):
    r = json.loads(line)
    out = r.get("stdout") or ""
    passed = sum(int(n) for n in re.findall(r"(\d+) passed", out))
    failed = sum(int(n) for n in re.findall(r"(\d+) (?:failed|errors?)\b", out))
    if r["result"] not in ("OK", "EXPECTEDFAIL", "SKIP"):
        print("FAILED:", r["name"], file=sys.stderr)
        failed = max(failed, 1)
    ok += passed
    bad += failed
print(f"{ok} {bad}")
PY
}

# GlusterFS names its bricks by host name, which must resolve (not to "localhost"): a machine
# whose own name does not resolve gets the Debian convention, 127.0.1.1, in /etc/hosts.
resolve_own_name() {
	local name
	name=$(hostname)
	getent hosts "$name" >/dev/null && return 0
	echo "setup: $name does not resolve; adding '127.0.1.1 $name' to /etc/hosts for GlusterFS"
	echo "127.0.1.1 $name" >>/etc/hosts
}

# install_node_clients: `npm ci` of tests/node/package-lock.json into tests/node/node_modules, once per lock
# file (a rerun with the same lock, offline too, reuses it); npm's cache is kept under $XDG_CACHE_HOME.
# Debian's npm only when no npm is there: Node.js packages from elsewhere (NodeSource) bring their own npm
# and conflict with Debian's.
install_node_clients() {
	local dir=$SRC/tests/node
	local stamp=$dir/node_modules/.envelopefs-package-lock.json
	command -v npm >/dev/null || install_packages npm
	if [ -f "$stamp" ] && cmp -s "$dir/package-lock.json" "$stamp"; then
		echo "setup: Node clients already installed (tests/node/node_modules)"
		return 0
	fi
	local start=$SECONDS
	(cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --prefer-offline \
		--cache "${XDG_CACHE_HOME:-$HOME/.cache}/envelopefs-npm") ||
		die "npm ci in tests/node failed: the Azure and Google Cloud peer tests need the vendors' Node clients"
	cp "$dir/package-lock.json" "$stamp"
	echo "setup: Node clients installed in $((SECONDS - start)) s (npm ci, tests/node/node_modules)"
}

run_tests() {
	install_packages $BUILD_PKGS $TEST_PKGS
	install_node_clients
	[ "$(id -u)" -eq 0 ] || die "the integration tests mount FUSE volumes: run as root"
	resolve_own_name

	echo "== builds (gcc, -Wall -Wextra -Werror): release, as quickstart makes it, and the test build"
	build build-release --buildtype=release -Dwerror=true
	build build -Dwerror=true
	echo "== unit and integration tests, and the Debian package (built and checked once, here)"
	local rc=0
	meson test -C build --print-errorlogs --num-processes 2 || rc=1
	read -r ok bad < <(summarize build/meson-logs/testlog.json)

	echo "== AddressSanitizer + UBSan build: unit and integration tests"
	build build-asan -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false
	local asan_logs=$SRC/build-asan/sanitizer-logs
	rm -rf "$asan_logs" && mkdir -p "$asan_logs"
	# The daemon detaches its stderr: sanitizer reports go to files, checked below.
	ASAN_OPTIONS="log_path=$asan_logs/asan:detect_leaks=1:abort_on_error=0" \
	UBSAN_OPTIONS="log_path=$asan_logs/ubsan:print_stacktrace=1:halt_on_error=1" \
		meson test -C build-asan --print-errorlogs --num-processes 2 --no-suite package || rc=1
	read -r aok abad < <(summarize build-asan/meson-logs/testlog.json)
	if compgen -G "$asan_logs/*" >/dev/null; then
		echo "sanitizer reports:" >&2
		cat "$asan_logs"/* >&2
		abad=$((abad + 1))
		rc=1
	fi
	echo
	echo "envelopefs tests: $((ok + aok)) passed, $((bad + abad)) failed" \
		"(gcc build: $ok passed, $bad failed; sanitizer build: $aok passed, $abad failed)"
	return $rc
}

case "${1:-}" in
quickstart) quickstart ;;
test) run_tests ;;
*) echo "usage: $0 quickstart|test" >&2; exit 2 ;;
esac
