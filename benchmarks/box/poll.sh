#!/usr/bin/env bash
# GPU box: wait up to SECONDS for the detached runner (launch.sh), then bring back its status, rows, the
# semsplat-batch summaries and each scene's result.json, evaluation figures and predicted test labels in $OUT.
#   bash benchmarks/box/poll.sh SECONDS
# Rows and other result files come back as results.tgz (tar -xzf it into benchmarks/box's local copy of /tmp/work).
# BRING_PSEUDO=SCENE (e.g. townA) also brings back that scene's pseudo labels, every run's, as pseudo.tgz
# when under 16 MiB.
# BRING_GSPLAT=1 also brings back gsplat's JIT-built kernels (gsplat_cuda.so, when under 16 MiB): kept in
# .gsplat_prebuilt/ (ignored) and carried, env.sh loads them and a fresh machine skips the ~3-minute build.
work=/tmp/work
end=$((SECONDS + $1))
while [ $SECONDS -lt $end ] && [ ! -f $work/done ]; do sleep 15; done
cat $work/status.txt 2>/dev/null; tail -5 $work/run.log 2>/dev/null
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
cp $work/status.txt "$OUT"/ 2>/dev/null
# every result file in one archive: a call brings back at most 8 files
(cd $work 2>/dev/null && find results -type f \( -name '*.json' -o -name '*.txt' \) | tar -czf "$OUT"/results.tgz -T -)
if [ -n "${BRING_PSEUDO:-}" ]; then  # the pseudo labels of scenes named so (for reading against the full labels here)
  (cd $work && find scenes -path "*/$BRING_PSEUDO/train/pseudo/*" -type f | tar -czf "$OUT"/pseudo.tgz -T - 2>/dev/null)
  [ "$(stat -c %s "$OUT"/pseudo.tgz)" -lt 16777216 ] || { echo "pseudo.tgz over 16 MiB: left out"; rm "$OUT"/pseudo.tgz; }
fi
if [ -n "${BRING_GSPLAT:-}" ]; then
  for so in /root/.cache/torch_extensions/*/gsplat_cuda/gsplat_cuda.so; do
    [ -f "$so" ] && [ "$(stat -c %s "$so")" -lt 16777216 ] && cp "$so" "$OUT"/ && break
  done
fi
(cd $work 2>/dev/null && find batch speedup scenes \( -name 'summary.*' -o -name result.json -o -name attempts.json \
  -o -path '*/eval/*.json' -o -name confusion_matrix.png -o -name per_class_iou.png -o -path '*/logs/*.log' \
  -o -name stage_times.json -o -path '*/train/pseudo/meta.json' -o -path '*/predict/test/labels/*' \) \
  2>/dev/null | tar -czf "$OUT"/batch_records.tgz -T - 2>/dev/null)
# The live state of running batches: the last stage line of each scene's newest log.
for log in $work/batch/*/*/logs/*.log $work/speedup/*/*/logs/*.log; do
  [ -f "$log" ] && echo "$log: $(tail -c 300 "$log" | tr '\r' '\n' | grep -a . | tail -1)"
done
true
