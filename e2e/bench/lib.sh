# Shared by the process benchmarks (sourced: `. "$(dirname "$0")/lib.sh" NAME`): the
# release binary, built first ($bin; FERROCKET_BIN names another build, e.g. an older
# commit's, and skips the build); a work directory ($work) and the processes
# started ($pids), all killed and removed on exit; free loopback ports (ports.sh).
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [ -n "${FERROCKET_BIN:-}" ]; then
  bin=$FERROCKET_BIN
else
  bin=$root/target/release/ferrocket
  cargo build --release -q -p ferrocket --manifest-path "$root/Cargo.toml"
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/ferrocket-$1.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
. "$(dirname "${BASH_SOURCE[0]}")/ports.sh"
export FERROCKET_LOG=warn

# A CA ($work/ca.pem) and a server certificate for 127.0.0.1 it signs ($work/cert.pem,
# $work/key.pem; rustls takes no CA as a leaf). Needs openssl; returns 1 without it.
make_certs() {
  command -v openssl >/dev/null || return 1
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=ferrocket-bench-ca \
    -keyout "$work/ca-key.pem" -out "$work/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj /CN=ferrocket-bench \
    -keyout "$work/key.pem" -out "$work/req.pem" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' > "$work/ext.cnf"
  openssl x509 -req -in "$work/req.pem" -CA "$work/ca.pem" -CAkey "$work/ca-key.pem" \
    -CAcreateserial -days 2 -extfile "$work/ext.cnf" -out "$work/cert.pem" 2>/dev/null
}

# An ACL file with one admin account ($work/plain_acl.yml) and its secret
# ($work/secret), for `bench --access-key bench-admin --secret-file $work/secret`.
make_acl() {
  cat > "$work/plain_acl.yml" <<'YML'
accounts:
  - accessKey: bench-admin
    secretKey: bench-secret-1
    admin: true
YML
  printf 'bench-secret-1' > "$work/secret"
}
