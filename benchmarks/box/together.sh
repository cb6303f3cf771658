#!/usr/bin/env bash
# GPU box runner: several runners at once in one detached launch, each given as one quoted command line (run with
# NO_DONE=1, so only the end of the last one writes $work/done, which poll.sh waits for). Give each its own GPUs:
#   bash benchmarks/box/launch.sh benchmarks/box/together.sh \
#     'CUDA_VISIBLE_DEVICES=0 python benchmarks/prior_speed.py .scenes/townA --out /tmp/work/results/prior_busy.json' \
#     'bash benchmarks/box/alone_grid.sh "1 semsplat-fast townA fastA" "2 semsplat-fast townB fastB"'
set -u
work=${WORK:-/tmp/work}
mkdir -p "$work"
for command in "$@"; do
  (
    NO_DONE=1 bash -c "$command"
    echo "$(date +%T) together: rc $? of: $command" >> "$work/status.txt"
  ) &
done
wait
echo "$(date +%T) runner done" >> "$work/status.txt"
touch "$work/done"
