#!/usr/bin/env bash
# GPU box runner: several runners in one detached launch, each given as one quoted command line (run with
# NO_DONE=1, so only the chain's end writes $work/done, which poll.sh waits for), one after another:
#   bash benchmarks/box/launch.sh benchmarks/box/chain.sh \
#     'bash benchmarks/box/grid_rows.sh "townA townB" "semsplat semsplat-baseline"' \
#     'bash benchmarks/box/prior_alone_rows.sh "townA townB"'
# or, with AT_ONCE=1, all at once (give each its own GPUs):
#   AT_ONCE=1 bash benchmarks/box/launch.sh benchmarks/box/chain.sh \
#     "bash benchmarks/box/grid_rows.sh townB 'semsplat@6000'" \
#     "bash benchmarks/box/alone_grid.sh '1 semsplat-fast townB fastB' '2 semsplat townB dflB'"
set -u
work=${WORK:-/tmp/work}
mkdir -p "$work"
run_one() {  # run_one COMMAND: the runner, then its exit status in the status file
  NO_DONE=1 bash -c "$1"
  local rc=$?  # before the date's command substitution, which would reset $?
  echo "$(date +%T) chain: rc $rc of: $1" >> "$work/status.txt"
}
for command in "$@"; do
  if [ -n "${AT_ONCE:-}" ]; then run_one "$command" & else run_one "$command"; fi
done
wait
echo "$(date +%T) runner done" >> "$work/status.txt"
touch "$work/done"
