# Source at the start of every GPU-box command (see ../shared/device/README.md):
#   source benchmarks/box/env.sh
# Installs the carried wheels once per machine (../shared/device/wheels.txt plus benchmarks/box/wheels.txt:
# dask and distributed for semsplat-batch), registers the plugin without installing it, puts semsplat's
# console scripts (semsplat-batch, semsplat-pseudo-labels, semsplat-eval, ...) on PATH and reuses a carried
# gsplat build when there is one.
if [ ! -d /tmp/site/nerfstudio ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || return 1
fi
# Bytecode for every module a run imports, once per machine, in one cache folder. The box sets
# PYTHONDONTWRITEBYTECODE=1, its preinstalled packages (torch, torchvision, sympy, jinja2, ... under the Python that
# runs everything) ship no bytecode, and the wheels are installed with --no-compile: so each process compiled every
# module it imported again. Measured on an H100 box (2026-11-27, 0314b96): `import nerfstudio.scripts.train` took
# 17.1-17.6 s against 7.0 s on the 2-core CPU box, and an `ns-train semsplat` setup spent 7.8 s in 4718 calls of
# `compile` (cProfile), none of which a user's installed environment pays. With a prefix, Python reads and writes all
# bytecode under it, for the read-only preinstalled folders too.
export PYTHONPYCACHEPREFIX=/tmp/pycache
if [ ! -f /tmp/pycache/.compiled ]; then
  started=$(date +%s)
  # every folder on the interpreter's path (the preinstalled site-packages, the standard library) and the wheels
  folders=$(python3 -c 'import sys, os; print(" ".join(p for p in sys.path if os.path.isdir(p)))')
  python3 -m compileall -q -j 0 /tmp/site $folders > /dev/null 2>&1
  mkdir -p /tmp/pycache && touch /tmp/pycache/.compiled
  echo "env.sh: bytecode compiled into $PYTHONPYCACHEPREFIX in $(( $(date +%s) - started )) s"
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
