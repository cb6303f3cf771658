#!/usr/bin/env bash
# GPU box: parity tests, channel-layout timing, then semsplat-baseline 30k on townA and townB (background).
source benchmarks/box/env.sh || exit 1
nvidia-smi --query-gpu=name,memory.total --format=csv
python - <<'PY'
import time, torch; t = time.time()
from gsplat.cuda._backend import _C
print("gsplat backend", _C, "load", round(time.time() - t, 1), "s", flush=True)
PY
python -m pytest -q tests/test_rasterizer.py -k cuda 2>&1 | tail -3 | tee $OUT/pytest_cuda.log
python benchmarks/raster_channels.py --out benchmarks/results/raster_channels.json 2>&1 | tail -8
cp benchmarks/results/raster_channels.json $OUT/
mkdir -p logs
for s in townA townB; do
  setsid nohup python benchmarks/bench_semsplat.py --scene .scenes/$s --method semsplat-baseline --steps 30000 \
    --out benchmarks/results/semsplat_baseline_$s.json --output-dir outputs-bench > logs/baseline_$s.log 2>&1 &
done
sleep 20; tail -3 logs/baseline_townA.log
