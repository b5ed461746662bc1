#!/usr/bin/env bash
# `list` / `show` / `revoke` / `crl` on a synthetic ledger of $LINES lines (default 1,000,000),
# with and without the inventory index. See benches/README.md ("Inventory on a large ledger").
#
#   benches/list.sh            # LINES=1000000
#   LINES=200000 benches/list.sh
#   NO_BUILD=1 benches/list.sh # reuse target/release as it is
set -euo pipefail
LINES=${LINES:-1000000}
cd "$(dirname "$0")/.."

if [[ -z ${NO_BUILD:-} ]]; then
    cargo build --release --bin smsgate-ca
    it=$(cargo test --release --test it --no-run 2>&1 |
        sed -n 's|.*Executable tests/it/main.rs (\(.*\))|\1|p')
else
    it=$(ls -t target/release/deps/it-* | grep -v '\.d$' | head -1)
fi
B=$PWD/target/release/smsgate-ca
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
S=(--state "$work/state" --spool "$work/spool" --policy policy/default.toml)

"$B" init "${S[@]}" --no-passphrase >/dev/null 2>&1
echo "generating a ledger of $LINES lines..."
gen_start=$(date +%s.%N)
SMSGATE_BENCH_STATE="$work/state" SMSGATE_BENCH_LINES="$LINES" \
    "$it" --ignored --exact lifecycle::generate_bench_ledger --nocapture 2>&1 |
    grep -E '^ledger:' || true
gen_end=$(date +%s.%N)
printf 'generated in %.1f s; ledger %s\n' "$(echo "$gen_end - $gen_start" | bc)" \
    "$(du -h "$work/state/ledger.jsonl" | cut -f1)"
sync

# Best of 3: wall seconds and peak RSS of one command, output to /dev/null.
t() {
    local label=$1
    shift
    local best="" rss=""
    for _ in 1 2 3; do
        /usr/bin/time -f '%e %M' -o "$work/time" "$B" "$@" "${S[@]}" >/dev/null 2>"$work/err" || {
            cat "$work/err" >&2
            return 1
        }
        read -r secs kib <"$work/time"
        if [[ -z $best ]] || (($(echo "$secs < $best" | bc))); then best=$secs rss=$kib; fi
    done
    printf '%-58s %6.2f s %8d KiB\n' "$label" "$best" "$rss"
}

idx="$work/state/inventory.idx"
printf '%-58s %8s %12s\n' "command" "wall" "peak RSS"
t "list --json --no-index (reads the whole ledger)" list --json --no-index
t "list --expiring 30d --json --no-index" list --expiring 30d --json --no-index
rm -f "$idx"
/usr/bin/time -f '%e %M' -o "$work/time" "$B" list --json "${S[@]}" >/dev/null 2>&1
read -r secs kib <"$work/time"
printf '%-58s %6.2f s %8d KiB\n' "list --json, first run (builds inventory.idx)" "$secs" "$kib"
printf 'inventory.idx: %s\n' "$(du -h "$idx" | cut -f1)"
t "list --json (index)" list --json
t "list (table, index)" list
t "list --expiring 30d --json (index)" list --expiring 30d --json
t "list --revoked --json (index)" list --revoked --json
t "list --ip 10.1.2.0/24 --json (index)" list --ip 10.1.2.0/24 --json
t "show bench00123456 (index)" show bench00123456
t "show <serial> --json (index)" show 01000000000000000000000000012345 --json
# Each revoke changes the ledger: one run each on three certificates, best kept.
best=""
for id in bench00000777 bench00000778 bench00000779; do
    /usr/bin/time -f '%e %M' -o "$work/time" "$B" revoke "$id" --reason superseded --no-crl \
        "${S[@]}" >/dev/null 2>&1
    read -r secs kib <"$work/time"
    if [[ -z $best ]] || (($(echo "$secs < $best" | bc))); then best=$secs rss=$kib; fi
done
printf '%-58s %6.2f s %8d KiB\n' "revoke ID --no-crl (Ledger::open reads the whole ledger)" \
    "$best" "$rss"
t "list --expiring 30d --json (index + catch-up of new lines)" list --expiring 30d --json
t "crl --days 7 (key, Ledger::open, index)" crl --days 7
