#!/usr/bin/env bash
# GPU box: wait up to SECONDS for the detached runner (benchmarks/box/launch.sh), then bring back
# its rows, status and evaluation pictures in $OUT.
#   bash benchmarks/box/poll.sh SECONDS
work=/tmp/work
end=$((SECONDS + $1))
while [ $SECONDS -lt $end ] && [ ! -f $work/done ]; do sleep 15; done
cat $work/status.txt 2>/dev/null; tail -5 $work/batch.log 2>/dev/null
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
cp $work/results/*.json $work/status.txt "$OUT"/ 2>/dev/null
(cd $work/outputs 2>/dev/null && find . -path '*eval-test*' \( -name '*.json' -o -name 'confusion_matrix.png' \
  -o -name 'per_class_iou.png' \) | tar -czf "$OUT"/eval_pictures.tgz -T - 2>/dev/null)
for log in $work/logs/*.log; do
  [ -f "$log" ] && grep -a -E "^│ +[0-9.]+ │" "$log" | tail -1 | sed "s|^|$(basename $log): |"
done
true
