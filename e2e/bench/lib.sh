# Shared by the process benchmarks (sourced: `. "$(dirname "$0")/lib.sh" NAME`): the
# release binary, built first ($bin); a work directory ($work) and the processes
# started ($pids), all killed and removed on exit; free loopback ports (ports.sh).
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin=$root/target/release/ferrocket
cargo build --release -q -p ferrocket --manifest-path "$root/Cargo.toml"
work=$(mktemp -d "${TMPDIR:-/tmp}/ferrocket-$1.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
. "$(dirname "${BASH_SOURCE[0]}")/ports.sh"
export FERROCKET_LOG=warn
