#!/usr/bin/env bash
# GPU box: where ns-train's setup and first steps go, under cProfile, on a scene copy whose automatic pseudo labels
# are already cached (a run of the same preset made them), so the profile shows what else a run pays for:
#   bash benchmarks/box/setup_profile.sh PRESET SCENE_COPY [STEPS]
# Writes /tmp/work/results/setup_profile_<preset>.txt (the top functions by cumulative time, then by own time).
set -u
work=${WORK:-/tmp/work}
preset=${1:?preset} scene=${2:?scene copy} steps=${3:-30}
mkdir -p "$work/results"
prof=$work/setup_$preset.prof
python -m cProfile -o "$prof" "$(command -v ns-train)" "$preset" --data "$scene" --output-dir "$work/setup_profile" \
  --vis tensorboard --max-num-iterations "$steps" --steps-per-save 100000 > "$work/setup_profile_$preset.log" 2>&1
echo "ns-train rc $?"
python - "$prof" > "$work/results/setup_profile_$preset.txt" <<'PY'
import pstats, sys
stats = pstats.Stats(sys.argv[1])
stats.sort_stats("cumulative").print_stats(70)
stats.sort_stats("tottime").print_stats(30)
PY
grep -a -A14 "Stage times" "$work/setup_profile_$preset.log" | tail -14
