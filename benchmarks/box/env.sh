# Source at the start of every GPU-box command (see ../shared/device/README.md):
#   source benchmarks/box/env.sh
# Installs the carried wheels once per machine (../shared/device/wheels.txt plus benchmarks/box/wheels.txt:
# dask and distributed for semsplat-batch), registers the plugin without installing it, puts semsplat's
# console scripts (semsplat-batch, semsplat-pseudo-labels, semsplat-eval, ...) on PATH and reuses a carried
# gsplat build when there is one.
if [ ! -d /tmp/site/nerfstudio ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || return 1
  # Bytecode once per machine, on all cores: --no-compile leaves none, and where PYTHONDONTWRITEBYTECODE is set (it
  # is on the CPU box) every process would compile again each module it imports. ns-train took 18-23 s from its
  # start to its first log line on a 2 x H200 box (2026-11-27) against 6.7 s on the 2-core CPU box, whose venv has
  # its bytecode; the cause is not measured yet, this is the first suspect.
  python3 -m compileall -q -j 0 /tmp/site > /dev/null 2>&1
  echo "env.sh: wheels installed and compiled; PYTHONDONTWRITEBYTECODE=${PYTHONDONTWRITEBYTECODE:-unset}"
fi
export PYTHONPATH=$PWD/benchmarks/box:/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
export MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0 PYTHONUNBUFFERED=1
[ -f .gsplat_prebuilt/gsplat_cuda.so ] && export GSPLAT_PREBUILT=$PWD/.gsplat_prebuilt/gsplat_cuda.so
# The project is not installed here: its nerfstudio entry points become nerfstudio's variables, and each
# [project.scripts] entry a small launcher importing from PYTHONPATH (semsplat-batch's stages find them on PATH).
# Rewritten each time from pyproject.toml: they name no path of this copy.
exports=$(python3 - <<'PY'
import tomllib, os, sys
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
points = project["entry-points"]
for group, variable in (("nerfstudio.method_configs", "NERFSTUDIO_METHOD_CONFIGS"),
                        ("nerfstudio.dataparser_configs", "NERFSTUDIO_DATAPARSER_CONFIGS")):
    print(f"export {variable}=" + ",".join(f"{name}={target}" for name, target in points[group].items()))
scripts = project["scripts"]
for name, target in scripts.items():
    module, function = target.split(":")
    path = f"/tmp/site/bin/{name}"
    os.makedirs("/tmp/site/bin", exist_ok=True)
    with open(path + ".tmp", "w") as handle:
        # the guard: Dask's worker processes start by spawn, which imports the main module again
        handle.write(
            f"#!{sys.executable}\nimport sys\nfrom {module} import {function}\n"
            f"if __name__ == '__main__':\n    sys.exit({function}())\n"
        )
    os.chmod(path + ".tmp", 0o755)
    os.replace(path + ".tmp", path)
PY
) || return 1
eval "$exports"
python3 -c "import dask, distributed" 2>/dev/null || echo "env.sh: dask/distributed missing: fetch benchmarks/box/wheels.txt into .whl (see its header)" >&2
true
