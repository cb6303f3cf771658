#!/usr/bin/env bash
# Functions of the GPU-box runners (support_rows.sh, split_rows.sh); source it after setting
#   work (the runner's folder), scenes (array of scene names) and, optionally, SCENES (their parent folder,
#   default .scenes), DEVICE (cuda), EXTRA_FLAGS (more ns-train flags for every run).
say() { echo "$(date +%T) $*" >> "$work/status.txt"; }
fresh_copies() {  # fresh_copies NAME: the scenes without any pseudo labels, under $work/scenes/NAME
  local dest=$work/scenes/$1
  mkdir -p "$dest"
  for s in "${scenes[@]}"; do
    cp -r "${SCENES:-.scenes}/$s" "$dest/$s"
    rm -rf "$dest/$s/train/pseudo" "$dest/$s/train/boundary" "$dest/$s/train/confidence"
  done
}
batch() {  # batch NAME PRESET THREADS STEPS FLAG...: semsplat-batch over the copies of NAME into $work/batch/NAME
  local name=$1 preset=$2 threads=$3 n=$4; shift 4
  local paths=() start=$SECONDS
  for s in "${scenes[@]}"; do paths+=("$work/scenes/$name/$s"); done
  semsplat-batch "${paths[@]}" --preset "$preset" --pseudo-backend none --device "${DEVICE:-cuda}" \
    --max-num-iterations "$n" --threads-per-scene "$threads" --output-dir "$work/batch/$name" \
    --dashboard-address :0 -- "$@" ${EXTRA_FLAGS:-} > "$work/batch_$name.log" 2>&1
  say "batch $name rc $? $((SECONDS - start)) s (GPUs ${CUDA_VISIBLE_DEVICES:-all})"
}
method_batch() {  # method_batch NAME METHOD THREADS STEPS: fresh copies, then METHOD's flags on the semsplat preset
  local name=$1 method=$2 threads=$3 n=$4 flags
  mapfile -t flags < <(python -m benchmarks.methods flags "$method" "$n")
  [ ${#flags[@]} -gt 0 ] || { say "$method: no flags"; return 1; }
  fresh_copies "$name"
  batch "$name" semsplat "$threads" "$n" "${flags[@]}"
}
fast_batch() {  # fast_batch NAME THREADS: semsplat-fast at its own steps, one checkpoint, no evaluation in the loop
  local n=${FAST_STEPS:-$(python -c 'from semsplat_ns.config import FAST_STEPS; print(FAST_STEPS)' | tail -n 1)}
  fresh_copies "$1"
  batch "$1" semsplat-fast "$2" "$n" --steps-per-save "$n" --steps-per-eval-image $((10 * n))
}
rows() {  # rows NAME METHOD RESULTS CONCURRENT...
  local name=$1 method=$2 results=$3; shift 3
  python -m benchmarks.batch_rows --batch "$work/batch/$name" --method "$method" --out "$work/results/$results" \
    --concurrent "$@" >> "$work/batch_$name.log" 2>&1
  say "rows $name rc $?"
}
