#!/usr/bin/env bash
# The signer daemon as an operator sees it (issue 13): a running `smsgate-ca daemon`, N P-256
# CSRs renamed into incoming/ by one `mv`, timed from the first rename to the last status file,
# next to `openssl speed -multi <cores> ecdsap256` measured in the same run. On tmpfs (the CPU
# figure) and on the disk under target/ (the durable figure), ROUNDS times each, printing every
# rate and its ratio to the CPU bound of one CSR verification plus one signature per request.
#
#   benches/operator.sh                 # N=3000 ROUNDS=3 KEYS=file
#   KEYS="file pkcs11" benches/operator.sh  # also the issuing key in a SoftHSM2 token
#                                       # (softhsm2, opensc), alternating, with the ratio
#   PERF=1 benches/operator.sh          # also `perf record` the daemon of the first tmpfs round
#   NO_BUILD=1 ...                      # reuse target/release as it is
#   BASELINE=/path/to/old/smsgate-ca ...  # also time another build, alternating rounds
#
# Needs: openssl, and for KEY=pkcs11 softhsm2-util and pkcs11-tool; for PERF=1 linux-perf.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-3000}
ROUNDS=${ROUNDS:-3}
KEYS=${KEYS:-${KEY:-file}}
CORES=$(nproc)
WORKERS=${WORKERS:-$CORES}
DISK=${DISK:-$PWD/target/bench-operator}
BIN=${BIN:-$PWD/target/release/smsgate-ca}
MODULE=${MODULE:-/usr/lib/softhsm/libsofthsm2.so}

if [ -z "${NO_BUILD:-}" ]; then
  cargo build --release --bin smsgate-ca >&2
fi

work=$(mktemp -d /tmp/smsgate-operator-XXXXXX)
shm=/dev/shm/smsgate-operator-$$
daemon_pid=
cleanup() {
  if [ -n "$daemon_pid" ]; then kill "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; fi
  rm -rf "$work" "$shm" "$DISK/run-$$"
}
trap cleanup EXIT

# --- CSRs: one key per request, each for its own 10.x.y.z --------------------------------
echo "generating $N CSRs with openssl ..." >&2
mkdir -p "$work/csrs"
for ((i = 0; i < N; i++)); do
  ip="10.$(((i >> 16) & 255)).$(((i >> 8) & 255)).$(((i & 255) | 1))"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null \
    -subj "/CN=$ip" -addext "subjectAltName=IP:$ip" -out "$work/csrs/r$i.csr" 2>/dev/null &
  if (((i + 1) % (CORES * 4) == 0)); then wait; fi
done
wait

# --- the reference: openssl speed in this run --------------------------------------------
line=$(openssl speed -seconds 3 -multi "$CORES" ecdsap256 2>/dev/null | grep nistp256 | tail -1)
sign=$(awk '{print $(NF-1)}' <<<"$line")
verify=$(awk '{print $NF}' <<<"$line")
bound=$(awk -v s="$sign" -v v="$verify" 'BEGIN {printf "%.0f", 1 / (1 / s + 1 / v)}')
echo "openssl speed -multi $CORES ecdsap256: $sign sign/s, $verify verify/s -> CPU bound $bound requests/s"

# --- one CA per key kind, for all rounds -------------------------------------------------
printf 'version = 1\n[profiles.webhook]\nserial_prefix = 1\nallow = ["10.0.0.0/8"]\n' >"$work/policy.toml"
for key in $KEYS; do
  mkdir -p "$work/ca-$key"
  if [ "$key" = pkcs11 ]; then
    mkdir -p "$work/tokens"
    printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$work/tokens" >"$work/softhsm2.conf"
    export SOFTHSM2_CONF=$work/softhsm2.conf
    softhsm2-util --init-token --free --label bench --so-pin 12345678 --pin 123456 >/dev/null
    printf '123456\n' >"$work/pin"
    chmod 600 "$work/pin"
    "$BIN" init --no-passphrase --root-only --state "$work/ca-$key/state" --policy "$work/policy.toml" \
      --spool "$work/ca-$key/spool0" --pkcs11-module "$MODULE" \
      --key-uri "pkcs11:token=bench;object=issuing" --generate-in-token --pin-file "$work/pin" >/dev/null
  else
    "$BIN" init --no-passphrase --root-only --state "$work/ca-$key/state" --policy "$work/policy.toml" \
      --spool "$work/ca-$key/spool0" >/dev/null
  fi
done

# run DIR LABEL KEY [BINARY]: a fresh spool (and a copy of KEY's CA state) under DIR; prints
# requests/s.
run() {
  local dir=$1 label=$2 key=$3 bin=${4:-$BIN}
  local key_args=()
  if [ "$key" = pkcs11 ]; then key_args=(--pin-file "$work/pin"); fi
  rm -rf "$dir"
  mkdir -p "$dir/spool/incoming" "$dir/staging"
  cp -a "$work/ca-$key/state" "$dir/state"
  cp "$work"/csrs/*.csr "$dir/staging/"
  "$bin" daemon --workers "$WORKERS" --state "$dir/state" --spool "$dir/spool" \
    --policy "$work/policy.toml" "${key_args[@]}" 2>"$dir/daemon.log" &
  daemon_pid=$!
  until grep -q "daemon ready" "$dir/daemon.log" 2>/dev/null; do sleep 0.05; done
  local perf_pid=
  if [ -n "${PERF:-}" ] && [ "$label" = perf ]; then
    perf record -F 999 --call-graph dwarf,16384 -o "$work/perf.data" -p "$daemon_pid" 2>/dev/null &
    perf_pid=$!
    sleep 1
  fi
  local t0 t1
  t0=$(date +%s.%N)
  # GNU mv may stat a target the daemon has already claimed and complain; the rename was done.
  (cd "$dir/staging" && find . -maxdepth 1 -name '*.csr' -print0 | xargs -0 mv -t "$dir/spool/incoming/" 2>/dev/null) || true
  while [ "$(find "$dir/spool/status" -maxdepth 1 -name '*.json' 2>/dev/null | wc -l)" -lt "$N" ]; do
    sleep 0.005
    if [ "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {print (b - a > 600)}')" = 1 ]; then
      echo "no $N status records after 600 s; see $dir/daemon.log" >&2
      exit 1
    fi
  done
  t1=$(date +%s.%N)
  if [ -n "$perf_pid" ]; then
    kill -INT "$perf_pid"; wait "$perf_pid" || true
    { perf report -i "$work/perf.data" --no-children -g none --sort dso --stdio 2>/dev/null | grep "%" | head -6; perf report -i "$work/perf.data" --no-children -g none --sort dso,symbol --stdio 2>/dev/null; } \
      | grep "%" | head -46 >"$PWD/target/operator-perf.txt"
    cp "$work/perf.data" "$PWD/target/operator-perf.data"
  fi
  kill "$daemon_pid"; wait "$daemon_pid" || true
  daemon_pid=
  if [ "$(grep -c '"status": "approved"' "$dir"/spool/status/*.json | grep -c ':1$')" -ne "$N" ]; then
    echo "not every request was approved; see $dir/daemon.log" >&2
    exit 1
  fi
  awk -v n="$N" -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", n / (b - a)}'
  rm -rf "$dir"
}

summary() { # WHERE LABEL RATES...: the range of a list of rates
  local where=$1 label=$2
  shift 2
  printf '%s\n' "$@" | sort -n | awk -v b="$bound" -v w="$where" -v l="$label" '
    NR == 1 {lo = $1} {hi = $1}
    END {printf "%s %s: %d-%d requests/s = %.2f-%.2f x the CPU bound\n", w, l, lo, hi, lo / b, hi / b}'
}
ratio() { awk -v x="$1" -v y="$2" 'BEGIN {printf "%.2f", x / y}'; }

echo "$N CSRs renamed into a running daemon ($WORKERS workers), first rename -> last status:"
for where in tmpfs disk; do
  declare -A rates=()
  base_rates=()
  for ((r = 1; r <= ROUNDS; r++)); do
    if [ "$where" = tmpfs ]; then dir=$shm; else dir=$DISK/run-$$; fi
    line="  $where round $r:"
    first=
    for key in $KEYS; do
      label=round
      if [ "$where" = tmpfs ] && [ "$r" = 1 ] && [ -z "$first" ]; then label=perf; fi
      rate=$(run "$dir" "$label" "$key")
      rates[$key]="${rates[$key]:-} $rate"
      line="$line $key $rate/s = $(ratio "$rate" "$bound") x the bound;"
      if [ -n "$first" ]; then line="$line $key/$first = $(ratio "$rate" "${first_rate}");"; fi
      if [ -z "$first" ]; then first=$key; first_rate=$rate; fi
    done
    if [ -n "${BASELINE:-}" ]; then
      base=$(run "$dir" round "${KEYS%% *}" "$BASELINE")
      base_rates+=("$base")
      line="$line baseline $base/s = $(ratio "$base" "$bound") x the bound; this build $(ratio "$first_rate" "$base") x the baseline"
    fi
    echo "$line"
  done
  for key in $KEYS; do
    # shellcheck disable=SC2086
    summary "$where" "$key" ${rates[$key]}
  done
  if [ -n "${BASELINE:-}" ]; then summary "$where" baseline "${base_rates[@]}"; fi
  unset rates
done
echo "(target: >= 0.4 x the CPU bound on tmpfs)"
if [ -n "${PERF:-}" ]; then
  echo "profile of the first tmpfs round: target/operator-perf.txt (data: target/operator-perf.data)"
fi
