#!/usr/bin/env bash
# `process` on N CSRs dropped into a fresh spool: wall seconds, best of ROUNDS, for one or two
# binaries measured in the same run (e.g. before and after a change), and their ratio.
#
#   benches/process.sh [N]                 # N=2000; the release build of this tree
#   BASE=/path/to/old/smsgate-ca benches/process.sh 2000   # also the reference binary
#
# The CSRs (P-256, one per IP in 10.0.0.0/8) are made once with the openssl CLI and renamed
# into incoming/ before each run; the spool lives in a temporary directory on the ordinary disk.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-2000}
rounds=${ROUNDS:-3}
[ -n "${NO_BUILD:-}" ] || cargo build --release --bin smsgate-ca >/dev/null
new=$PWD/target/release/smsgate-ca
work=$(mktemp -d /var/tmp/smsgate-process-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/csrs"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/key.pem" 2>/dev/null
for i in $(seq 1 "$n"); do
  ip="10.$(( i / 62500 )).$(( (i / 250) % 250 )).$(( i % 250 + 1 ))"
  openssl req -new -key "$work/key.pem" -subj "/CN=$ip" -addext "subjectAltName = IP:$ip" \
    -out "$work/csrs/r$i.csr" 2>/dev/null
done
cat > "$work/policy.toml" <<'TOML'
version = 1
[profiles.webhook]
serial_prefix = 1
allow = ["10.0.0.0/8"]
TOML

# best wall seconds of `process` for binary $1
measure() {
  local bin=$1 best=
  for _ in $(seq 1 "$rounds"); do
    rm -rf "$work/run" && mkdir -p "$work/run/spool/incoming"
    "$bin" init --no-passphrase --state "$work/run/state" --policy "$work/policy.toml" \
      >/dev/null 2>&1
    cp "$work"/csrs/*.csr "$work/run/spool/incoming/"
    sync
    local t0 t1
    t0=$(date +%s.%N)
    "$bin" process --state "$work/run/state" --spool "$work/run/spool" \
      --policy "$work/policy.toml" >/dev/null 2>"$work/run/log"
    t1=$(date +%s.%N)
    local approved
    approved=$(grep -l '"approved"' "$work"/run/spool/status/*.json | wc -l)
    [ "$approved" -eq "$n" ] || { echo "$bin: only $approved of $n approved" >&2; exit 1; }
    best=$(echo "$t1 - $t0" | bc | awk -v b="$best" '{ if (b == "" || $1 < b) print $1; else print b }')
  done
  echo "$best"
}

t_new=$(measure "$new")
printf 'this tree:  %s s for %s CSRs (%.0f/s)\n' "$t_new" "$n" "$(echo "$n / $t_new" | bc -l)"
if [ -n "${BASE:-}" ]; then
  t_base=$(measure "$BASE")
  printf 'reference:  %s s for %s CSRs (%.0f/s)\n' "$t_base" "$n" "$(echo "$n / $t_base" | bc -l)"
  printf 'ratio this/reference: %.2f (below 1: faster)\n' "$(echo "$t_new / $t_base" | bc -l)"
fi
