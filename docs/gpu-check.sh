#!/bin/bash
# GPU checklist (../shared/GPU.md), one go, on the device machine: `bash docs/gpu-check.sh`; logs -> $OUT.
# Needs the onnxruntime-gpu wheel split into part0..part3/ (carried one per call; see the developers guide).
cd "$(dirname "$0")/.."
L=$OUT; mkdir -p $L /tmp/ortparts
cp part*/part* /tmp/ortparts/ 2>/dev/null
export PYTHONPATH=$PWD
t0=$(date +%s); stamp() { echo "[$(( $(date +%s) - t0 ))s] $*" | tee -a $L/timeline.log; }
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; python3 -c "import torch,onnx,onnxruntime as o,numpy;print('torch',torch.__version__,'cuda',torch.version.cuda,'cudnn',torch.backends.cudnn.version());print('onnx',onnx.__version__,'ort',o.__version__,o.get_available_providers(),'numpy',numpy.__version__)"; } > $L/versions.log 2>&1
stamp "1. --provider cuda with the CPU-only onnxruntime"
python3 cli.py all --arch shallow --device cuda --provider cuda --artifacts-dir /tmp/art0 > $L/no-ortgpu.log 2>&1; echo "exit $?" >> $L/no-ortgpu.log
stamp "2. install onnxruntime-gpu"
W=/tmp/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
cat /tmp/ortparts/part0 /tmp/ortparts/part1 /tmp/ortparts/part2 /tmp/ortparts/part3 > $W
{ sha256sum $W; python3 -m pip install -q --no-deps --no-index --target /tmp/ortgpu $W; } > $L/install.log 2>&1
export PYTHONPATH=/tmp/ortgpu:$PWD
python3 -c "import torch, onnxruntime as o; print(o.__version__, o.__file__, o.get_available_providers())" >> $L/versions.log 2>&1
stamp "3. pytest -m cuda, and the trainer tests on this torch"
timeout 150 python3 -m pytest -q -p no:cacheprovider -m cuda -rs > $L/pytest-cuda.log 2>&1; echo "exit $?" >> $L/pytest-cuda.log
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py tests/test_train.py -x > $L/pytest-trainers.log 2>&1; echo "exit $?" >> $L/pytest-trainers.log
stamp "4. all / verify on CUDA"
{ python3 cli.py all --arch all --device cuda --provider cuda --artifacts-dir /tmp/art; echo "exit $?"; python3 cli.py verify --arch all --require cuda --artifacts-dir /tmp/art; echo "exit $?"; python3 cli.py all --arch shallow --device cpu --provider cpu --artifacts-dir /tmp/artcpu; echo "exit $?"; } > $L/all.log 2>&1
python3 - > $L/loss-compare.log 2>&1 <<'PY'
import json
for name in ("shallow",):
    g = json.load(open(f"/tmp/art/{name}/v1/loss_history.json"))["loss"]; c = json.load(open(f"/tmp/artcpu/{name}/v1/loss_history.json"))["loss"]
    worst = max(abs(a - b) / abs(b) for a, b in zip(g[::100], c[::100]))
    print(name, "steps", len(g), len(c), "worst rel diff at log steps", worst, "final", g[-1], c[-1])
for name in ("shallow", "wide-deep"):
    m = json.load(open(f"/tmp/art/{name}/v1/manifest.json")); print(name, m["train"]["device"], m["train"]["trainer"], m["train"]["seconds"], m.get("serve_check", {}).get("providers"), "verify", m["verify"]["passed"])
PY
stamp "5. bench --quick"
timeout 200 python3 cli.py bench --quick --out $L/bench-quick.json > $L/bench-quick.log 2>&1; echo "exit $?" >> $L/bench-quick.log
stamp "6. sweep 100,000 shallow seeds on the GPU"
timeout 150 python3 -c "
from pipeline.bench import BenchConfig, bench_sweep
print(bench_sweep(BenchConfig(), 'cuda'))" > $L/sweep-gpu.log 2>&1; echo "exit $?" >> $L/sweep-gpu.log
stamp done
