#!/usr/bin/env bash
# GPU box, issue #12 rows, detached: prior pseudo labels written into the carried scenes, then one semsplat
# training per (scene, method) spread over the GPUs (several per GPU share it under MPS), then the
# evaluations one at a time on an otherwise idle GPU, then the Unet rows. Rows go to /tmp/work/results/.
#   setsid nohup bash benchmarks/box/prior_rows.sh "townA townB" "semsplat-baseline semsplat-prior" 30000 \
#       > /tmp/work/run.log 2>&1 < /dev/null &
# Watch it with `bash benchmarks/box/poll.sh SECONDS`.
set -u
source benchmarks/box/env.sh || exit 1
work=/tmp/work
mkdir -p $work/logs $work/results $work/state $work/outputs
read -r -a scenes <<< "$1"
read -r -a methods <<< "$2"
steps=${3:-30000}
ngpu=$(nvidia-smi -L | wc -l)
say() { echo "$(date +%T) $*" >> $work/status.txt; }
if command -v nvidia-cuda-mps-control >/dev/null; then
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
  mkdir -p /tmp/mps /tmp/mps-log
  # A daemon left by an earlier run on this machine serves as well.
  if pgrep -x nvidia-cuda-mps-control >/dev/null || nvidia-cuda-mps-control -d; then
    say "MPS on"
  else
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
    say "MPS off"
  fi
fi

# SKIP_PSEUDO=1: the carried scenes already hold the prior's pseudo labels (brought back from an earlier run).
[ -n "${SKIP_PSEUDO:-}" ] && scenes_pseudo=() || scenes_pseudo=("${scenes[@]}")
say "pseudo labels (prior) for ${scenes_pseudo[*]}"
i=0
for s in "${scenes_pseudo[@]}"; do
  ( start=$SECONDS
    CUDA_VISIBLE_DEVICES=$((i % ngpu)) python -m semsplat_ns.scripts.pseudo_labels --data .scenes/$s --backend prior \
      > $work/logs/pseudo_$s.log 2>&1
    say "pseudo $s rc $? $((SECONDS - start)) s" ) &
  i=$((i + 1))
done
wait

n=$((${#scenes[@]} * ${#methods[@]}))
say "training $n runs on $ngpu GPU(s)"
i=0
for s in "${scenes[@]}"; do
  for m in "${methods[@]}"; do
    gpu=$((i % ngpu))
    share=$(((n - gpu + ngpu - 1) / ngpu))  # runs given to this GPU
    ( start=$SECONDS
      CUDA_VISIBLE_DEVICES=$gpu python benchmarks/bench_semsplat.py --scene .scenes/$s --method $m --steps $steps \
        --stage train --state $work/state/${s}_$m.json --output-dir $work/outputs --jobs-sharing-gpu $share \
        > $work/logs/train_${s}_$m.log 2>&1
      say "train $s $m rc $? $((SECONDS - start)) s" ) &
    i=$((i + 1))
  done
done
wait

for s in "${scenes[@]}"; do
  for m in "${methods[@]}"; do
    CUDA_VISIBLE_DEVICES=0 python benchmarks/bench_semsplat.py --scene .scenes/$s --method $m --stage eval \
      --state $work/state/${s}_$m.json --out $work/results/semsplat_prior.json >> $work/logs/train_${s}_$m.log 2>&1
    say "eval $s $m rc $?"
  done
done

[ -n "${SKIP_UNET:-}" ] && { say "runner done"; touch $work/done; exit 0; }
unet_args=()
for s in "${scenes[@]}"; do unet_args+=(--data .scenes/$s); done
CUDA_VISIBLE_DEVICES=0 python -m benchmarks.baselines.unet "${unet_args[@]}" --out $work/results/unet.json \
  > $work/logs/unet.log 2>&1
say "unet rc $?"
say "runner done"
touch $work/done
