#!/usr/bin/env bash
# Soak: the adversarial spool test (tests/it/adversarial.rs) with more files, more seeded
# SIGKILLs and several seeds, outside `cargo test`'s budget. While it runs, spool
# subdirectories are swapped (renameat2 RENAME_EXCHANGE) for symbolic links to a directory
# outside the spool and back; the round fails if anything there was written (issue 9).
#
#   benches/soak.sh [ROUNDS] [FILES_PER_WRITER] [KILLS]     # defaults: 10 rounds, 1000, 200
#
# Each round uses seed = round number; a failing round prints its seed so it can be rerun
# with SMSGATE_SOAK_SEED=<seed> cargo test --test it adversarial.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-10}
files=${2:-1000}
kills=${3:-200}
cargo test --release --test it --no-run >/dev/null
for seed in $(seq 1 "$rounds"); do
  start=$(date +%s)
  if SMSGATE_SOAK_SEED=$seed SMSGATE_SOAK_FILES=$files SMSGATE_SOAK_KILLS=$kills \
      cargo test --release --test it adversarial -- --quiet >/tmp/soak-$seed.log 2>&1; then
    echo "seed $seed: ok ($(( $(date +%s) - start )) s, 4 writers x $files files, $kills kills)"
  else
    echo "seed $seed: FAILED, see /tmp/soak-$seed.log"; exit 1
  fi
done
