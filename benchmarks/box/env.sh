# Source at the start of every GPU-box command (see ../shared/device/README.md):
#   source benchmarks/box/env.sh
# Installs the carried wheels once per machine, registers the plugin without installing it and
# reuses a carried gsplat build when there is one.
if [ ! -d /tmp/site/nerfstudio ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || return 1
fi
export PYTHONPATH=$PWD/benchmarks/box:/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
export NERFSTUDIO_METHOD_CONFIGS=semsplat=semsplat_ns.config:semsplat
export NERFSTUDIO_DATAPARSER_CONFIGS=irt-data=semsplat_ns.data.dataparser_config:irt_data
export MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0 PYTHONUNBUFFERED=1
[ -f .gsplat_prebuilt/gsplat_cuda.so ] && export GSPLAT_PREBUILT=$PWD/.gsplat_prebuilt/gsplat_cuda.so
true
