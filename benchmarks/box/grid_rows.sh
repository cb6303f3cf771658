#!/usr/bin/env bash
# GPU box runner for a grid of methods (issue #12), started with launch.sh (MPS=1 when a group holds several):
#   bash benchmarks/box/launch.sh benchmarks/box/grid_rows.sh "townA townB" "GROUP" ["GROUP" ...]
# A GROUP is a space-separated list of METHOD or METHOD@STEPS (benchmarks/methods.py; default: the preset's); the
# methods of a group train at once, each on its own fresh copy of the scenes, one scene per GPU. Groups go to the
# GPU pairs (0,1), (2,3), ... in turn; a pair runs its groups one after another. Every run makes the prior's
# pseudo labels inside ns-train where its method needs them, as a user's does.
# Rows: /tmp/work/results/semsplat_prior.json (method METHOD at the preset's steps, METHOD-<k>k otherwise, jobs_sharing_gpu
# counted over the batches of its group); with the scenes' full labels in $GT/<scene> (measuring only), each
# run's pseudo labels are also scored into /tmp/work/results/pseudo_quality.json (benchmarks/pseudo_quality.py).
set -u
work=${WORK:-/tmp/work}
mkdir -p $work/results $work/batch $work/scenes
read -r -a scenes <<< "${1:?scenes}"
shift
groups=("$@")
[ ${#groups[@]} -gt 0 ] || { echo "grid_rows.sh: no group of methods" >&2; exit 2; }
source benchmarks/box/lib.sh
preset_steps=$(python -c 'from semsplat_ns.schedule import PRESET_STEPS; print(PRESET_STEPS)' | tail -n 1)
gpus=$(nvidia-smi -L | wc -l)
pairs=$(( gpus / ${#scenes[@]} ))
[ "$pairs" -ge 1 ] || pairs=1
widest=1
for g in "${groups[@]}"; do read -r -a ms <<< "$g"; [ ${#ms[@]} -gt "$widest" ] && widest=${#ms[@]}; done
threads=$(( $(nproc) / (pairs * ${#scenes[@]} * widest) ))
[ "$threads" -ge 1 ] || threads=1

name_of() {  # name_of METHOD[@STEPS]: the batch's (and its rows') name
  local method=${1%@*} steps=$preset_steps
  [[ $1 == *@* ]] && steps=${1#*@}
  if [ "$steps" = "$preset_steps" ]; then echo "$method"; else echo "$method-$((steps / 1000))k"; fi
}
run_group() {  # run_group GPUS GROUP: the group's methods at once on GPUS, then their rows
  local gpus=$1 entry name other others
  read -r -a entries <<< "$2"
  export CUDA_VISIBLE_DEVICES=$gpus
  say "group [${entries[*]}] on GPUs $gpus"
  for entry in "${entries[@]}"; do
    local steps=$preset_steps
    [[ $entry == *@* ]] && steps=${entry#*@}
    method_batch "$(name_of "$entry")" "${entry%@*}" "$threads" "$steps" &
    sleep 20  # the Dask clusters start one after another
  done
  wait
  for entry in "${entries[@]}"; do
    name=$(name_of "$entry")
    others=()
    for other in "${entries[@]}"; do [ "$other" = "$entry" ] || others+=("$work/batch/$(name_of "$other")"); done
    rows "$name" "$name" semsplat_prior.json "${others[@]}"
    for s in "${scenes[@]}"; do
      [ -d "${GT:-}/$s" ] || continue
      python -m benchmarks.pseudo_quality "$work/scenes/$name/$s" "$GT/$s" --method "$name" \
        --out "$work/results/pseudo_quality.json" >> "$work/batch_$name.log" 2>&1
    done
  done
}
pair_chain() {  # pair_chain K: groups K, K + pairs, ... on GPU pair K
  local k=$1 first=$(( $1 * ${#scenes[@]} )) list=""
  for ((g = 0; g < ${#scenes[@]}; g++)); do list+="${list:+,}$((first + g))"; done
  for ((i = k; i < ${#groups[@]}; i += pairs)); do run_group "$list" "${groups[$i]}"; done
}
for ((k = 0; k < pairs && k < ${#groups[@]}; k++)); do pair_chain "$k" & sleep 10; done
wait
say "grid done"
# NO_DONE=1: a runner that calls this one goes on after it (poll.sh waits for $work/done).
[ -n "${NO_DONE:-}" ] || { say "runner done"; touch $work/done; }
