#!/usr/bin/env bash
# GPU box: start benchmarks/box/batch.py detached, on a private copy of the repo under /tmp/work.
#   bash benchmarks/box/launch.sh PLAN_DIR      # PLAN_DIR holds phase1.txt, phase2.txt, ...
# Then watch it with `bash benchmarks/box/poll.sh SECONDS` in later calls (each within 30 s of the
# last, or the machine goes back). Set SEMSPLAT_COMMIT to the commit sent, for the rows.
source benchmarks/box/env.sh || exit 1
work=/tmp/work
if [ -f $work/launched ]; then echo "already launched"; exit 0; fi
mkdir -p $work/plan $work/repo
tar --exclude=./.whl --exclude=./.git -cf - . | tar -xf - -C $work/repo
cp "$1"/phase*.txt $work/plan/
export PYTHONPATH=$PWD/benchmarks/box:/tmp/site:$work/repo
[ -f $work/repo/.gsplat_prebuilt/gsplat_cuda.so ] && export GSPLAT_PREBUILT=$work/repo/.gsplat_prebuilt/gsplat_cuda.so
# MPS lets the concurrent trainings' small kernels overlap; without it they only time-slice.
if command -v nvidia-cuda-mps-control >/dev/null; then
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
  mkdir -p /tmp/mps /tmp/mps-log
  if nvidia-cuda-mps-control -d && timeout 60 python -c "import torch; torch.ones(1).cuda(); torch.cuda.synchronize()"; then
    echo "MPS on"
  else
    echo quit | nvidia-cuda-mps-control; unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY; echo "MPS off"
  fi
fi
cd $work/repo
touch $work/launched
setsid nohup python benchmarks/box/batch.py --work $work > $work/batch.log 2>&1 < /dev/null &
sleep 5; cat $work/batch.log; echo "launched"
