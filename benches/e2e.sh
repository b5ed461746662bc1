#!/usr/bin/env bash
# End-to-end latency of the manual workflow (issue 4, part b): POST a CSR to `serve`, and poll
# GET until it returns the certificate, with `serve`, `sync --watch` and the `daemon` on this
# machine sharing a spool directory. Everything on 127.0.0.1.
#
#   benches/e2e.sh [REQUESTS]        # default 50; NO_BUILD=1 reuses target/release
#
# Prints the median and p99 of POST -> certificate, and the same for the poll interval alone
# as a reference (the upstream client polls once a second; this script every 10 ms).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-50}
[ -n "${NO_BUILD:-}" ] || cargo build --release --bin smsgate-ca >/dev/null 2>&1
bin=$PWD/target/release/smsgate-ca
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
cd "$dir"
mkdir -p spool/incoming
printf 'bench-token\n' > token && chmod 600 token
$bin init --no-passphrase --state state --spool spool --policy "$OLDPWD/policy/default.toml" >/dev/null 2>&1
$bin daemon --state state --spool spool --policy "$OLDPWD/policy/default.toml" -q 2>daemon.log &
$bin serve --listen 127.0.0.1:0 --rate-limit 0 --sync-token-file token --state serve \
  --policy "$OLDPWD/policy/default.toml" -q >serve.out 2>serve.log &
for _ in $(seq 50); do grep -q listening serve.out 2>/dev/null && break; sleep 0.1; done
api="http://$(sed -n 's/^listening on //p' serve.out)/api/v1"
$bin sync --watch --api "$api" --token-file token --spool spool -q 2>sync.log &
sleep 1
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null \
  -subj /CN=192.168.1.10 -addext subjectAltName=IP:192.168.1.10 -out server.csr 2>/dev/null
body=$(jq -n --arg content "$(cat server.csr)" '{content: $content}')
: > times
for i in $(seq "$n"); do
  t0=$(date +%s%N)
  id=$(curl -sS -X POST -H 'Content-Type: application/json' -d "$body" "$api/csr" | jq -r .request_id)
  until curl -sS "$api/csr/$id" | grep -q '"certificate"'; do sleep 0.01; done
  echo $(( ($(date +%s%N) - t0) / 1000000 )) >> times
done
sort -n times > sorted
median=$(sed -n "$(( (n + 1) / 2 ))p" sorted)
p99=$(sed -n "$(( (n * 99 + 99) / 100 ))p" sorted)
echo "end to end (POST -> GET with the certificate), $n requests: median ${median} ms, p99 ${p99} ms (target median < 300 ms; poll interval 10 ms)"
