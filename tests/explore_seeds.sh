#!/bin/bash
# SPDX-License-Identifier: MIT
# explore_seeds.sh [SEEDS] - each explorer (content: all six volume variants; namespace:
# encrypted and plain names) with SEEDS random seeds (default 20), while stress-ng loads
# the machine (CPU, VM and I/O workers on both cores), as in the issue 17 flake.  Not in CI:
# a soak for a person (apt-get install stress-ng).  Prints one line per seed and explorer
# and a summary; the seeds that failed can be replayed with ENVFS_EXPLORE_SEED=N.
# Run from the source tree as root, after a build (ENVELOPEFS_BUILD_ROOT, default build/).
set -u
seeds=${1:-20}
src=$(cd "$(dirname "$0")/.." && pwd)
export ENVELOPEFS_SOURCE_ROOT=$src ENVELOPEFS_BUILD_ROOT=${ENVELOPEFS_BUILD_ROOT:-$src/build}
command -v stress-ng >/dev/null || { echo "explore_seeds: stress-ng missing (apt-get install stress-ng)" >&2; exit 2; }
log=$(mktemp -d /tmp/explore-seeds.XXXXXX)
# The load ends by itself after 2 hours at the latest, and with this script.
stress-ng --cpu 2 --vm 1 --vm-bytes 256M --hdd 1 --hdd-bytes 64M --timeout 7200 >"$log/stress.log" 2>&1 &
stress=$!
trap 'kill $stress 2>/dev/null; wait $stress 2>/dev/null' EXIT
pass=0 fail=0 failed=()
for i in $(seq "$seeds"); do
	seed=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
	for explorer in "test_fs_explore.py::test_explore_content" \
			"test_fs_names_explore.py::test_namespace_matches_a_local_filesystem"; do
		start=$(date +%s)
		if ENVFS_EXPLORE_SEED=$seed pytest -q -p no:cacheprovider -x \
			"$src/tests/integration/$explorer" >"$log/$seed-${explorer%%.py*}.log" 2>&1; then
			result=pass; pass=$((pass + 1))
		else
			result=FAIL; fail=$((fail + 1)); failed+=("$seed ${explorer%%.py*}")
		fi
		echo "seed $seed ${explorer%%.py*}: $result ($(($(date +%s) - start)) s, load $(cut -d' ' -f1 /proc/loadavg))"
	done
done
echo "$pass passed, $fail failed"
for f in "${failed[@]}"; do echo "failed: $f (log in $log)"; done
[ "$fail" -eq 0 ]
