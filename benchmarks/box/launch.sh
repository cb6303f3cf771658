#!/usr/bin/env bash
# GPU box: start a runner script detached, on a private copy of the repo under /tmp/work (a device call lasts
# 10 minutes, a machine stays ours for 30; later calls only watch it with poll.sh, each within 30 s of the last).
#   export SEMSPLAT_COMMIT=<sent commit>    # stamped into the rows (the box's copy has no .git)
#   bash benchmarks/box/launch.sh benchmarks/box/batch_rows.sh "townA townB" "semsplat" 30000 semsplat_prior.json
#   bash benchmarks/box/launch.sh benchmarks/box/speedup_row.sh "townA townB townC townD" semsplat 30000
# The runners run semsplat-batch (one Dask worker per GPU); rows, summaries and status go to /tmp/work.
# MPS=1 starts the CUDA MPS daemon first (only useful when several processes share a GPU).
source benchmarks/box/env.sh || exit 1
work=/tmp/work
if [ -f $work/launched ]; then echo "already launched (rm -rf $work to start over)"; exit 0; fi
[ -f "$1" ] || { echo "launch.sh: error: $1: no such runner script" >&2; exit 2; }
mkdir -p $work/repo $work/results
tar --exclude=./.whl --exclude=./.git -cf - . | tar -xf - -C $work/repo
cd $work/repo
source benchmarks/box/env.sh || exit 1  # the copy's paths (PYTHONPATH, GSPLAT_PREBUILT)
python3 -m compileall -q -j 0 semsplat_ns benchmarks > /dev/null  # the copy's bytecode (env.sh says why)
if [ -n "${MPS:-}" ] && command -v nvidia-cuda-mps-control >/dev/null; then
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
  mkdir -p /tmp/mps /tmp/mps-log
  # a daemon already started (an earlier launch) has made its control pipe; pgrep -x cannot match names of 16+
  if [ -p /tmp/mps/control ] || nvidia-cuda-mps-control -d; then echo "MPS on"; else
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY; echo "MPS off"; fi
fi
# gsplat's first import JIT-builds its kernels unless GSPLAT_PREBUILT names a build; several first imports at
# once (one per Dask worker) race and fail, so build (or load) it once here, in the foreground.
timeout 500 python -c 'import gsplat.cuda._backend as b; print("gsplat kernels:", b._C)' || exit 1
touch $work/launched
setsid nohup bash "$@" > $work/run.log 2>&1 < /dev/null &
sleep 5; cat $work/run.log; echo "launched $1"
