#!/usr/bin/env bash
# The GPU table of bench/RESULTS.md in one run on one CUDA GPU, official code included (its custom
# CUDA ops built here first), within 8 minutes (the per-step limits below add up to 480 s; never yet run on
# a GPU, so whether each step fits its limit is not known); no network needed.
#
#   bench/gpu_check.sh [OFFICIAL_REPO] [--wheels DIR] [--out DIR] [--steps LIST]
#   bench/gpu_check.sh [OFFICIAL_REPO] --dry-run          # = --device cpu --tiny: every step, tiny, ~2 min
#
# OFFICIAL_REPO: a checkout of NVlabs/stylegan3 (default /work/src/stylegan3). --wheels DIR: a folder of
# wheels to pip-install ninja from when it is missing (the official ops compile with ninja and nvcc).
# --out DIR (default: $OUT, else gpu-check-<UTC time>/ in the working tree) receives each step's JSON,
# its Markdown rows (<step>.md), its log (<step>.log) and status/<step> (ok, or why nothing came out);
# the last thing printed is the RESULTS.md block (bench/gpu_report.py). --steps: a comma-separated
# subset of build-ops,generate,train,cold-start,service. Each step runs under its own time limit.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
repo=/work/src/stylegan3
wheels=""
out="${OUT:-}"
device=cuda
tiny=0
steps="build-ops,generate,train,cold-start,service"

usage() { sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --wheels) wheels="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --device) device="$2"; shift 2 ;;
        --tiny) tiny=1; shift ;;
        --dry-run) device=cpu; tiny=1; shift ;;
        --steps) steps="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "unknown option $1" >&2; usage >&2; exit 2 ;;
        *) repo="$1"; shift ;;
    esac
done
case "$device" in cpu|cuda) ;; *) echo "--device must be cpu or cuda" >&2; exit 2 ;; esac

cd "$root"
py="${PYTHON:-}"
if [ -z "$py" ]; then
    if [ -x .venv/bin/python ]; then py="$root/.venv/bin/python"; else py="$(command -v python3)"; fi
fi
# A pip-installed ninja lands beside the interpreter; torch's extension builder looks for it on PATH.
PATH="$(dirname "$py"):$PATH"
out="${out:-$root/gpu-check-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out/status"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The compiled official ops, shared by every step of this run (not kept: they are rebuilt per run).
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$work/torch_extensions}"

# Per-step limits in seconds, adding up to the issue's 8 minutes (and under the device tool's 10 minutes a
# command); a step that runs out is recorded as not measured, with why.
t_build=150 t_generate=120 t_train=60 t_cold=60 t_service=90
if [ "$tiny" = 1 ]; then t_build=60 t_generate=60 t_train=60 t_cold=90 t_service=90; fi

wanted() { case ",$steps," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
say() { printf '%s\n' "$*" >&2; }
mark() { printf '%s\n' "$2" >"$out/status/$1"; }

# run_step NAME LIMIT COMMAND...: stdout to NAME.md, stderr to NAME.log, the outcome to status/NAME.
run_step() {
    local name="$1" limit="$2" start rc=0
    shift 2
    if ! wanted "$name"; then mark "$name" "skipped (not in --steps)"; return 0; fi
    say "== $name (limit ${limit} s): $*"
    start=$(date +%s)
    timeout --kill-after=15 "$limit" "$@" >"$out/$name.md" 2>"$out/$name.log" || rc=$?
    case "$rc" in
        0) mark "$name" ok ;;
        124|137) mark "$name" "timed out after ${limit} s" ;;
        *) mark "$name" "failed with exit code $rc, see $name.log" ;;
    esac
    say "   $(cat "$out/status/$name") after $(($(date +%s) - start)) s"
}

# -- tools ----------------------------------------------------------------------------------------------
if [ "$device" = cuda ]; then
    if ! command -v ninja >/dev/null 2>&1 && [ -n "$wheels" ]; then
        say "ninja missing: installing it from $wheels"
        "$py" -m pip install --quiet --no-index --find-links "$wheels" ninja || say "   pip install ninja failed"
    fi
    command -v ninja >/dev/null 2>&1 || say "ninja not found: the official custom ops cannot build (reference path)"
    if ! command -v nvcc >/dev/null 2>&1 && [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ]; then
        PATH="${CUDA_HOME:-/usr/local/cuda}/bin:$PATH"
    fi
    command -v nvcc >/dev/null 2>&1 || say "nvcc not found: the official custom ops cannot build (reference path)"
fi
export PATH

# -- settings ---------------------------------------------------------------------------------------------
if [ "$tiny" = 1 ]; then
    net=(--cbase 1024 --cmax 64 --map 2)
    generate=(bench/bench_generate.py --device "$device" --arch stylegan2 --res 32 --batch 2 "${net[@]}"
        --warmup 0 --rounds 2 --calls 1 --threads 1)
    train=(bench/bench_train.py --device "$device" --arch stylegan2 --res 32 --batch 4 "${net[@]}"
        --aug bgc --iters 2 --warmup 0 --rounds 1 --threads 1)
    cold=(bench/bench_cold_start.py --device "$device" --res 32 "${net[@]}" --reps 1 --threads 1)
    service=(bench/bench_service.py --device "$device" --arch stylegan2 --res 16 --cbase 256 --cmax 16
        --map 2 --threads 1 --levels "1,3" --seconds 1 --rounds 1 --level-warmup 0.3 --bare-seconds 0.1)
    settings="tiny dry run ($device, fp32): generate 32 px batch 2, train 32 px batch 4 x 2 iterations, cold start 32 px, service 16 px"
else
    fp16=()
    if [ "$device" = cuda ]; then fp16=(--fp16); fi
    generate=(bench/bench_generate.py --device "$device" --suite --rounds 3 --calls 10)
    train=(bench/bench_train.py --device "$device" --arch stylegan2 --res 256 --batch 32 "${fp16[@]}"
        --aug bgc --iters 16 --warmup 1 --rounds 2)
    cold=(bench/bench_cold_start.py --device "$device" --reps 1)
    service=(bench/bench_service.py --device "$device" --arch stylegan2 --res 256 --levels "1,32"
        --seconds 5 --rounds 1 --level-warmup 2 --bare-seconds 3)
    settings="generate --suite (psi 0.7, fp16 top 4 resolutions + conv_clamp 256 on CUDA; 10 warm-up calls, 5 paired rounds of 20 calls); train 256 px batch 32 bgc p=0.2, 16 iterations per call, 1 warm-up, 2 paired rounds; cold start 1024 px snapshot, 2 repetitions; service 256 px, 1/8/32 clients, 5 s x 2 rounds"
fi
official=(--official-repo "$repo" --official-impl cuda)

# -- environment -----------------------------------------------------------------------------------------
"$py" - "$device" "$settings" >"$out/env.json" <<'EOF'
import json, subprocess, sys
sys.path.insert(0, "bench")
import torch
from common import environment
device, settings = sys.argv[1], sys.argv[2]
env = environment(torch.device(device))
try:
    query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
    env["driver"] = subprocess.run(query, capture_output=True, text=True, check=True).stdout.strip()
except (OSError, subprocess.CalledProcessError):
    env["driver"] = None
env["settings"] = settings
print(json.dumps(env, indent=1))
EOF

# -- steps -------------------------------------------------------------------------------------------------
if [ "$device" = cuda ]; then
    run_step build-ops "$t_build" "$py" - "$repo" <<'EOF'
import sys
from pathlib import Path
sys.path.insert(0, "bench")
import torch
from official import load_official
code = load_official(Path(sys.argv[1]), impl="cuda", device=torch.device("cuda"))
print(code.describe())
sys.exit(0 if code.impl == "cuda" and not any("failed" in s for s in code.shims) else 1)
EOF
else
    mark build-ops "skipped (CPU run: the official code takes its reference path)"
fi
run_step generate "$t_generate" "$py" "${generate[@]}" "${official[@]}" --json "$out/generate.json"
run_step train "$t_train" "$py" "${train[@]}" "${official[@]}" --json "$out/train.json"
run_step cold-start "$t_cold" "$py" "${cold[@]}" --official-repo "$repo" --workdir "$work/cold" \
    --json "$out/cold_start.json"
if [ -f bench/bench_service.py ]; then
    run_step service "$t_service" "$py" "${service[@]}" --json "$out/service.json"
else
    mark service "skipped: bench/bench_service.py is not in this tree"
    say "== service: skipped (bench/bench_service.py is not in this tree)"
fi

say "== results in $out"
"$py" bench/gpu_report.py "$out" | tee "$out/report.md"
