#!/usr/bin/env bash
# Throughput and p99 latency of `smsgate-ca serve` on loopback (not part of `cargo test`).
#
# Three runs of $DURATION each against one release server (rate limit off, SQLite in a temp
# dir, logs discarded): POST /api/v1/csr with a valid CSR (each answer a 202 after the
# request is durably committed), GET /api/v1/csr/{id} of a known id, and GET /health as the
# ceiling of the same server. Prints requests/s, p99 and the ratios to the ceiling, and
# checks that every accepted POST is in the database.
#
# Usage: benches/api.sh            (env: DURATION=10s CONNECTIONS=64 THREADS=1)
# Needs: wrk (apt-get install -y wrk), openssl, curl, jq.
set -euo pipefail

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}

cd "$(dirname "$0")/.."
for tool in wrk openssl curl jq; do
    command -v "$tool" >/dev/null || { echo "benches/api.sh: $tool is missing (apt-get install -y $tool)" >&2; exit 2; }
done

cargo build --release --quiet --bin smsgate-ca
bin=target/release/smsgate-ca

work=$(mktemp -d)
server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then kill -TERM "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# A valid P-256 CSR for a private IP, as a JSON body.
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/bench.key" \
    -subj /CN=192.168.1.10 -addext subjectAltName=IP:192.168.1.10 -out "$work/bench.csr" 2>/dev/null
jq -n --rawfile c "$work/bench.csr" '{content: $c, type: "webhook"}' > "$work/body.json"

"$bin" --state "$work/state" --policy policy/default.toml serve --listen 127.0.0.1:0 \
    --rate-limit 0 > "$work/stdout" 2> "$work/serve.log" &
server_pid=$!
for _ in $(seq 100); do grep -q '^listening on ' "$work/stdout" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's/^listening on //p' "$work/stdout")
[ -n "$addr" ] || { echo "serve did not start:" >&2; cat "$work/serve.log" >&2; exit 1; }
base="http://$addr"

id=$(curl -sf -H 'Content-Type: application/json' --data-binary @"$work/body.json" "$base/api/v1/csr" | jq -r .request_id)

cat > "$work/post.lua" <<'EOF'
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
EOF
cat > "$work/report.lua" <<'EOF'
done = function(summary, latency, requests)
    local non2xx = summary.errors.status
    io.write(string.format("RESULT rps=%.0f p99_ms=%.2f requests=%d non2xx=%d socket_errors=%d\n",
        summary.requests / (summary.duration / 1e6), latency:percentile(99) / 1000,
        summary.requests, non2xx,
        summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
EOF
cat "$work/post.lua" "$work/report.lua" > "$work/post_report.lua"

run() { # name url script
    local out
    out=$(BODY_FILE="$work/body.json" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$3" "$2")
    echo "$out" | sed -n 's/^RESULT //p' | sed "s/^/$1 /"
}

echo "smsgate-ca serve on $addr: $(nproc) cores, wrk -t$THREADS -c$CONNECTIONS -d$DURATION"
health=$(run health "$base/health" "$work/report.lua")
get=$(run get "$base/api/v1/csr/$id" "$work/report.lua")
pending_before=$(curl -sf "$base/metrics" | sed -n 's/^smsgate_ca_pending_requests //p')
post=$(run post "$base/api/v1/csr" "$work/post_report.lua")
pending_after=$(curl -sf "$base/metrics" | sed -n 's/^smsgate_ca_pending_requests //p')

field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
printf '%-8s %10s %10s %10s %8s\n' route req/s p99_ms requests non2xx
for line in "$health" "$get" "$post"; do
    set -- $line
    printf '%-8s %10s %10s %10s %8s\n' "$1" "$(field "$line" rps)" "$(field "$line" p99_ms)" \
        "$(field "$line" requests)" "$(field "$line" non2xx)"
done
h=$(field "$health" rps); g=$(field "$get" rps); p=$(field "$post" rps)
awk -v g="$g" -v p="$p" -v h="$h" 'BEGIN { printf "ratios: GET/health %.2f  POST/health %.2f\n", g / h, p / h }'
stored=$((pending_after - pending_before))
echo "POST answered 2xx: $(( $(field "$post" requests) - $(field "$post" non2xx) )) (wrk counts only completed responses); stored during the run: $stored"
echo "targets (issue 4): POST >= 3000/s, GET >= 15000/s"
