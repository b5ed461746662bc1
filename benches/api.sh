#!/usr/bin/env bash
# Throughput and p99 latency of `smsgate-ca serve` on loopback (not part of `cargo test`).
#
# Three setups in one run, each with its own /health ceiling measured in the same run:
#   sqlite   one release server on SQLite in a temp dir;
#   pg1      one server on PostgreSQL (a throwaway cluster: Debian's initdb/pg_ctl as the
#            postgres user, on a free port on 127.0.0.1, stopped at the end);
#   pg2      two servers on that same database, the load split over both.
# For each: GET /health (the ceiling), GET /api/v1/csr/{id} of a known id, POST /api/v1/csr
# with a valid CSR (each 202 sent after the row is committed). Prints requests/s, p99 and
# the ratios to that setup's ceiling, and checks that the database holds at least every
# accepted POST. Rate limit off, logs to files, nothing but 127.0.0.1.
#
# Usage: benches/api.sh    (env: DURATION=10s CONNECTIONS=64 THREADS=1 SETUPS="sqlite pg1 pg2")
# Needs: wrk, openssl, curl, jq; PostgreSQL server binaries (apt-get install -y postgresql).
set -euo pipefail

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
SETUPS=${SETUPS:-sqlite pg1 pg2}

cd "$(dirname "$0")/.."
for tool in wrk openssl curl jq; do
    command -v "$tool" >/dev/null || { echo "benches/api.sh: $tool is missing (apt-get install -y $tool)" >&2; exit 2; }
done
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)

cargo build --release --quiet --bin smsgate-ca
bin=$PWD/target/release/smsgate-ca

work=$(mktemp -d)
chmod 755 "$work"
pids=()
pg_data=
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    if [ -n "$pg_data" ]; then runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_data" -m immediate stop >/dev/null 2>&1 || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# A valid P-256 CSR for a private IP, as a JSON body.
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/bench.key" \
    -subj /CN=192.168.1.10 -addext subjectAltName=IP:192.168.1.10 -out "$work/bench.csr" 2>/dev/null
jq -n --rawfile c "$work/bench.csr" '{content: $c, type: "webhook"}' > "$work/body.json"

cat > "$work/post.lua" <<'EOF'
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
EOF
cat > "$work/report.lua" <<'EOF'
done = function(summary, latency, requests)
    io.write(string.format("RESULT rps=%.0f p99_ms=%.2f requests=%d non2xx=%d\n",
        summary.requests / (summary.duration / 1e6), latency:percentile(99) / 1000,
        summary.requests, summary.errors.status))
end
EOF
cat "$work/post.lua" "$work/report.lua" > "$work/post_report.lua"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Starts one server with extra flags (not in a subshell: its pid must reach cleanup); the
# base URL is left in $work/$name.url.
start_server() { # name flags...
    local name=$1; shift
    "$bin" --state "$work/$name" --policy policy/default.toml serve --listen 127.0.0.1:0 \
        --rate-limit 0 "$@" > "$work/$name.stdout" 2> "$work/$name.log" &
    pids+=($!)
    for _ in $(seq 200); do grep -q '^listening on ' "$work/$name.stdout" 2>/dev/null && break; sleep 0.1; done
    local addr
    addr=$(sed -n 's/^listening on //p' "$work/$name.stdout")
    [ -n "$addr" ] || { echo "serve $name did not start:" >&2; cat "$work/$name.log" >&2; exit 1; }
    echo "http://$addr" > "$work/$name.url"
}
url_of() { cat "$work/$1.url"; }

start_postgres() {
    [ -n "$pg_bin" ] || { echo "benches/api.sh: PostgreSQL is missing (apt-get install -y postgresql)" >&2; exit 2; }
    mkdir -p "$work/pg" && chown postgres:postgres "$work/pg"
    pg_data=$work/pg/data
    runuser -u postgres -- "$pg_bin/initdb" -A trust -U postgres -D "$pg_data" >/dev/null
    pg_port=$(free_port)
    runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_data" -l "$work/pg/server.log" \
        -o "-k $work/pg -p $pg_port -c listen_addresses=127.0.0.1 -c max_connections=200" -w start >/dev/null
    psql -X -q -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -c 'CREATE DATABASE bench'
}

# wrk against one or more bases at once (connections split); prints "rps p99 requests non2xx"
# summed over the bases (p99: the worst).
load() { # path script bases...
    local path=$1 script=$2; shift 2
    local n=$# c=$((CONNECTIONS / $#)) i=0 files=()
    for base in "$@"; do
        i=$((i + 1))
        BODY_FILE="$work/body.json" wrk -t"$THREADS" -c"$c" -d"$DURATION" --latency -s "$script" \
            "$base$path" > "$work/wrk.$i" &
        files+=("$work/wrk.$i")
    done
    wait   # the wrk runs (this function runs in a subshell: nothing else is its child)
    sed -n 's/^RESULT //p' "${files[@]}" | awk '{
        for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        rps += v["rps"]; req += v["requests"]; bad += v["non2xx"]; if (v["p99_ms"] > p99) p99 = v["p99_ms"]
    } END { printf "%d %.2f %d %d\n", rps, p99, req, bad }'
}

pending() { curl -sf "$1/metrics" | sed -n 's/^smsgate_ca_pending_requests //p'; }

results=()
measure() { # setup bases...
    local setup=$1; shift
    local first=$1
    local id
    id=$(curl -sf -H 'Content-Type: application/json' --data-binary @"$work/body.json" "$first/api/v1/csr" | jq -r .request_id)
    local health get post before after
    health=$(load /health "$work/report.lua" "$@")
    get=$(load "/api/v1/csr/$id" "$work/report.lua" "$@")
    before=$(pending "$first")
    post=$(load /api/v1/csr "$work/post_report.lua" "$@")
    after=$(pending "$first")
    local accepted=$(( $(echo "$post" | cut -d' ' -f3) - $(echo "$post" | cut -d' ' -f4) ))
    local stored=$(( after - before ))
    [ "$stored" -ge "$accepted" ] || echo "WARNING $setup: $accepted POSTs answered 2xx but the database gained $stored" >&2
    results+=("$setup health $health" "$setup get $get" "$setup post $post")
    echo "$setup: POST 2xx $accepted, stored during the run $stored" >&2
}

for setup in $SETUPS; do
    case $setup in
        sqlite) start_server sqlite; measure sqlite "$(url_of sqlite)" ;;
        pg1|pg2)
            [ -n "$pg_data" ] || start_postgres
            url="postgres://postgres@127.0.0.1:$pg_port/bench"
            if [ "$setup" = pg1 ]; then
                start_server pg1a --db "$url"
                measure pg1 "$(url_of pg1a)"
            else
                start_server pg2a --db "$url"
                start_server pg2b --db "$url"
                measure pg2 "$(url_of pg2a)" "$(url_of pg2b)"
            fi
            ;;
        *) echo "benches/api.sh: unknown setup $setup" >&2; exit 2 ;;
    esac
    # Stop this setup's servers before the next one loads the machine.
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    pids=()
done

echo "serve on 127.0.0.1: $(nproc) cores, wrk -t$THREADS -c$CONNECTIONS -d$DURATION per setup (split over instances)"
printf '%-7s %-7s %10s %9s %10s %8s %8s\n' setup route req/s p99_ms requests non2xx ratio
for line in "${results[@]}"; do
    set -- $line
    setup=$1
    ceiling=$(printf '%s\n' "${results[@]}" | awk -v s="$setup" '$1 == s && $2 == "health" { print $3 }')
    awk -v l="$line" -v c="$ceiling" 'BEGIN { split(l, f, " ");
        printf "%-7s %-7s %10s %9s %10s %8s %8.2f\n", f[1], f[2], f[3], f[4], f[5], f[6], f[3] / c }'
done
echo "targets (issue 10, 2 cores): PostgreSQL POST >= 2000/s durable, GET >= 15000/s; pg2 not slower than pg1"
