#!/usr/bin/env bash
# GPU box runner: several runners one after another in one detached launch, each given as one quoted command
# line (run with NO_DONE=1, so only the chain's end writes $work/done, which poll.sh waits for):
#   bash benchmarks/box/launch.sh benchmarks/box/chain.sh \
#     'bash benchmarks/box/grid_rows.sh "townA townB" "semsplat semsplat-baseline"' \
#     'bash benchmarks/box/prior_alone_rows.sh "townA townB"'
set -u
work=${WORK:-/tmp/work}
mkdir -p "$work"
for command in "$@"; do
  NO_DONE=1 bash -c "$command"
  echo "$(date +%T) chain: rc $? of: $command" >> "$work/status.txt"
done
echo "$(date +%T) runner done" >> "$work/status.txt"
touch "$work/done"
