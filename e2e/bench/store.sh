#!/usr/bin/env bash
# The store benchmark matrix of BENCHMARKS.md, with the disk's own limits measured by
# fio in the same run. Usage: e2e/bench/store.sh [seconds per run] (needs fio).
set -euo pipefail
secs=${1:-10}
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$root/target/release/ferrocket
cargo build --release -q -p ferrocket --manifest-path "$root/Cargo.toml"
work=$(mktemp -d "${TMPDIR:-/tmp}/ferrocket-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
command -v fio >/dev/null || { echo "fio is not installed (apt-get install fio)" >&2; exit 1; }

echo "## disk (fio, $work)"
fiobw() { # label, fio args...: prints "label: N MB/s, M IOPS"
  local label=$1; shift
  fio --name=x --filename="$work/fio" --output-format=json "$@" 2>/dev/null |
    python3 -c 'import json,sys; w=json.load(sys.stdin)["jobs"][0]["write"]; print("%s: %.1f MB/s, %.0f IOPS" % (sys.argv[1], w["bw"]*1024/1e6, w["iops"]))' "$label"
  rm -f "$work/fio"
}
fiobw "sequential write, 1 MiB blocks, fsync at end" --rw=write --bs=1M --size=2G --ioengine=psync --end_fsync=1
fiobw "4 KiB write + fdatasync" --rw=write --bs=4k --size=256M --ioengine=psync --fdatasync=1 --runtime=10
fiobw "64 KiB write + fdatasync" --rw=write --bs=64k --size=256M --ioengine=psync --fdatasync=1 --runtime=10

echo "## store (ferrocket bench store, 1 KiB bodies, ${secs}s each)"
for flush in async sync; do
  for a in 1 16 64; do
    "$bin" bench store --dir "$work/s" --flush "$flush" --appenders "$a" --duration "${secs}s" 2>/dev/null
    rm -rf "$work/s"
  done
done
echo "## read back (32-message batches)"
"$bin" bench store --dir "$work/s" --appenders 16 --duration "${secs}s" --read 2>/dev/null
rm -rf "$work/s"
