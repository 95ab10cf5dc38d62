#!/usr/bin/env bash
# The GPU checks of one device session, each step under its own time limit; log and results under $OUT.
#   bash .devkit/run.sh bash bench/gpu_check.sh table      # CUDA tests, today vs now, bench/gpu.py's table
#   bash .devkit/run.sh bash bench/gpu_check.sh ablation   # the full ablation space under FIFO, its report
#   bash .devkit/run.sh bash bench/gpu_check.sh claims SPACE   # SPACE at budget full (--mps), for issue 11's
#       full-scale reproduction; a run longer than LIMIT (540 s, under the device's 10-minute call) stops with
#       Ctrl-C's exit 130 and the same command in the next call (within 30 s, while /root is kept) resumes it
#   bash .devkit/run.sh bash bench/gpu_check.sh claims SPACE MODE   # MODE: fused (--fuse on, a trial's seeds as one
#       stacked network), sequential (--fuse off) or adaptive (--until-decided); its own folder SPACE-full-MODE
#   bash .devkit/run.sh bash bench/gpu_check.sh seeds    # report A's ResNet-18 (batch 64, 30 epochs), 5 seeds fused
#       in one process (cnnsearch.train --seeds): the wall time of a decisive 5-seed run of one recipe
#   bash .devkit/run.sh bash bench/gpu_check.sh seeds-sweep   # issue 19: ResNet-18 b64/b512, 1/2/4/8 seeds fused in one
#       process vs as many processes under MPS (python bench/gpu.py --seeds-sweep, about 7 min); $OUT/gpu-seeds.json
#       (EXTRA="--device cpu --tiny": the same steps on a CPU)
# "today" is the engine before the fast path, carried as .baseline/cnnsearch (git archive 7d9b293 cnnsearch).
set -u
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
LOG=$OUT/log.txt
RUNS=${RUNS:-/root/gpu-runs}
step() {  # step LIMIT_S COMMAND...: run it, log it, never stop the script
  local limit=$1; shift
  echo "=== $(date +%T) [$limit s] $*" | tee -a "$LOG"
  timeout -s INT -k 20 "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  echo "=== exit $rc" | tee -a "$LOG"
  return "$rc"
}
case "${1:-table}" in
  table)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$LOG"
    step 150 python -m pytest -q -p no:cacheprovider tests/test_steps.py tests/test_fused.py -k "cuda or graph"
    step 60 env PYTHONPATH=".baseline:$PYTHONPATH" python -m cnnsearch.train --arch resnet18 --batch-size 512 \
      --val-size 10000 --epochs 3 --quiet --no-download --out /tmp/today
    step 60 python -m cnnsearch.train --arch resnet18 --batch-size 512 --val-size 10000 --epochs 3 --quiet \
      --no-download --out /tmp/now
    step 320 python bench/gpu.py --json "$OUT/gpu.json"
    cp "$OUT/gpu.json" /root/gpu.json 2>/dev/null
    ;;
  ablation)
    rm -rf "$RUNS"; mkdir -p "$RUNS"
    step 450 python bench/gpu.py --table-from "${TABLE:-bench/gpu.json}" --ablation "$RUNS" --json "$OUT/gpu-ablation.json"
    step 100 python -m analysis report "$RUNS/ablation-full-fifo" --out "$RUNS/ablation-full-fifo/analysis" --no-download
    tar czf "$OUT/ablation-full-fifo.tgz" --exclude='*.pt' -C "$RUNS" ablation-full-fifo
    ;;
  claims)
    space=${2:-ablation}; name=$space-full
    fuse=()
    case "${3:-}" in
      fused) fuse=(--fuse on) ;; sequential) fuse=(--fuse off) ;; adaptive) fuse=(--until-decided) ;; "") ;;
      *) echo "claims SPACE [fused|sequential|adaptive]" >&2; exit 2 ;;
    esac
    [ -n "${3:-}" ] && name=$name-$3
    mkdir -p "$RUNS"
    resume=(); [ -d "$RUNS/$name" ] && resume=(--resume)
    mps=(--mps); [ "${MPS:-1}" = 0 ] && mps=()  # BUDGET=smoke MPS=0 RUNS=DIR: the same steps on a CPU
    if step "${LIMIT:-540}" python -m tune.run --space "$space" --budget "${BUDGET:-full}" "${mps[@]}" "${fuse[@]}" \
        --no-dashboard --no-download --storage "$RUNS" --name "$name" "${resume[@]}"; then
      step 100 python -m analysis report "$RUNS/$name" --out "$RUNS/$name/analysis" --no-download
    else
      echo "=== not finished: the same command in the next call resumes it" | tee -a "$LOG"
    fi
    [ -d "$RUNS/$name" ] && tar czf "$OUT/$name.tgz" --exclude='*.pt' -C "$RUNS" "$name"
    ;;
  seeds)  # EPOCHS=1 EXTRA="--train-subset 20 --width 0.25 --device cpu" RUNS=DIR: the same steps on a CPU
    rm -rf "$RUNS/seeds"; mkdir -p "$RUNS"
    step "${LIMIT:-540}" python -m cnnsearch.train --arch resnet18 --batch-size 64 --epochs "${EPOCHS:-30}" \
      --seeds 0,1,2,3,4 --quiet --no-download --out "$RUNS/seeds" ${EXTRA:-}
    [ -d "$RUNS/seeds" ] && tar czf "$OUT/seeds.tgz" --exclude='*.pt' -C "$RUNS" seeds
    ;;
  seeds-sweep)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tee -a "$LOG"
    step "${LIMIT:-540}" python bench/gpu.py --seeds-sweep --json "$OUT/gpu-seeds.json" ${EXTRA:-}
    cp "$OUT/gpu-seeds.json" /root/gpu-seeds.json 2>/dev/null
    ;;
esac
echo "=== $(date +%T) done" | tee -a "$LOG"
