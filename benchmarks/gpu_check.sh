#!/usr/bin/env bash
# The GPU checks of equimod_edu in one short script (about 5 minutes on one H100/H200,
# torch.compile warm-up included; each part has its own time limit).
#
#   bash benchmarks/gpu_check.sh                    # on a GPU machine, from anywhere in the repo
#   GPU_CHECK_SMOKE=1 bash benchmarks/gpu_check.sh  # tiny sizes on CPU: checks the script itself
#   PYTHON=python3 bash benchmarks/gpu_check.sh     # another interpreter (default: python)
#
# The GPU machine has PyTorch and torchvision but no internet and not our venv: the package is
# used from the source tree (PYTHONPATH=.) and nothing is installed. equimod_edu.train imports
# tqdm for its progress bar; if tqdm is missing, benchmarks/train_step.py registers a do-nothing
# stand-in before that import (the benchmarks never show a bar), so no stub files are written.
# pytest runs only if it is importable.
#
# Parts (one failing does not stop the others; the script exits 1 at the end if any failed):
#   1. augment   benchmarks/augment.py on CUDA: batched engine vs per-image PIL, images/s
#   2. pytest    tests/test_augment.py -k cuda (the engine on CUDA matches CPU)
#   3. step      EquiMod / SimCLR seconds per step, ResNet-18, batch 512 (target <= 1.6)
#   4. fast      seconds per 50k-image EquiMod ResNet-18 epoch, batch 512, bf16 + channels_last
#                + torch.compile (target on one H100: <= 3 s); also host syncs in one step
#   5. plain     the same in fp32, NCHW, eager
#   6. byol-fast, 7. byol-plain   BYOL+EquiMod, the same two settings (compile on and off)
#   8. syncs     tests/test_train.py -k host_synchronisation: the CPU-visible syncs of a step (the
#                fast/plain parts count every sync on the GPU, the batch gather included)
#   9. linear    one epoch of the paper's SGD linear evaluation (probes.linear_eval_sgd) on the device
# fast / plain / byol-* also print the augmentation's share of a step.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python}
SMOKE=${GPU_CHECK_SMOKE:-0}
LOGS=$(mktemp -d)
trap 'rm -rf "$LOGS"' EXIT

if [[ $SMOKE == 1 ]]; then
    echo "GPU_CHECK_SMOKE=1: tiny sizes on CPU; CUDA-only checks are skipped or report CPU numbers"
    DEV=(--device cpu --threads 1)  # one thread: a shared small CPU makes 2-thread timings erratic
    AUGMENT=(benchmarks/augment.py --device cpu --batch 64 --seconds 0.2 --repeats 1)
    STEP=(--backbone resnet18 --batch 16 --steps 1 --repeats 2 --warmup 1)
    EPOCH=(--backbone convnet --proj-hidden 64 --batch 32 --images 256 --steps 2 --warmup 1)
    EPOCH_PLAIN=(--backbone resnet18 --batch 16 --images 64 --steps 1 --warmup 1)
    LINEAR=(--backbone resnet18 --images 256)
else
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
        || { echo "no CUDA device visible to $PY (use GPU_CHECK_SMOKE=1 on a CPU machine)"; exit 1; }
    DEV=(--device cuda)
    AUGMENT=(benchmarks/augment.py --device cuda --seconds 2 --repeats 1)
    STEP=(--backbone resnet18 --batch 512 --steps 10 --repeats 3 --warmup 3)
    EPOCH=(--backbone resnet18 --batch 512 --images 50000 --warmup 3)   # a whole epoch is timed
    EPOCH_PLAIN=("${EPOCH[@]}")
    LINEAR=(--backbone resnet18 --images 50000)
fi

"$PY" - <<'EOF'
import platform, torch, torchvision
gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
print(f"python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"CUDA {torch.version.cuda}, GPUs {gpus or 'none'}, CPU threads {torch.get_num_threads()}")
EOF

FAILED=()
# part NAME SECONDS COMMAND...: run with a time limit, keep going on failure, keep the output.
part() {
    local name=$1 limit=$2 start=$SECONDS status=0
    shift 2
    echo
    echo "=== $name: $*"
    timeout "$limit" "$@" 2>&1 | tee "$LOGS/$name.log" || status=$?
    if [[ $status == 0 ]]; then
        echo "--- $name: ok ($((SECONDS - start)) s)"
    else
        echo "--- $name: FAILED (exit $status$([[ $status == 124 ]] && echo ", over ${limit} s"); $((SECONDS - start)) s)"
        FAILED+=("$name")
    fi
}

part augment 120 "$PY" "${AUGMENT[@]}"
if "$PY" -c "import pytest" 2>/dev/null; then
    part pytest 180 "$PY" -m pytest -q -p no:cacheprovider tests/test_augment.py -k cuda
else
    echo; echo "=== pytest: not installed here, skipped"
fi
part step 180 "$PY" benchmarks/train_step.py --mode step "${DEV[@]}" "${STEP[@]}"
part fast 300 "$PY" benchmarks/train_step.py --mode gpu-epoch --setting fast "${DEV[@]}" "${EPOCH[@]}"
part plain 180 "$PY" benchmarks/train_step.py --mode gpu-epoch --setting plain "${DEV[@]}" "${EPOCH_PLAIN[@]}"
part byol-fast 300 "$PY" benchmarks/train_step.py --mode gpu-epoch --setting fast --base byol "${DEV[@]}" "${EPOCH[@]}"
part byol-plain 180 "$PY" benchmarks/train_step.py --mode gpu-epoch --setting plain --base byol "${DEV[@]}" "${EPOCH_PLAIN[@]}"
if "$PY" -c "import pytest" 2>/dev/null; then
    part syncs 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_train.py -k host_synchronisation
fi
part linear 180 "$PY" benchmarks/train_step.py --mode linear-eval "${DEV[@]}" "${LINEAR[@]}"

echo
echo "=== summary"
for name in augment step fast plain byol-fast byol-plain linear; do
    line=$(grep -E '^(ratio|seconds_per_epoch|seconds_per_linear_eval_epoch)=' "$LOGS/$name.log" 2>/dev/null | tail -n 1 || true)
    echo "$name: ${line:-no result}"
done
grep -h -E 'images/s|host synchronisations' "$LOGS"/fast.log "$LOGS"/plain.log "$LOGS"/byol-*.log 2>/dev/null \
    | sed 's/^/  /' || true
if ((${#FAILED[@]})); then
    echo "failed parts: ${FAILED[*]}"
    exit 1
fi
echo "all parts ran"
