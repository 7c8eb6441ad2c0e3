#!/usr/bin/env bash
# The camera-model experiment on the synthetic benchmark: -L teacher, then -C and -D students from the same
# initial weights, seed and schedule (only the distillation differs), for several seeds. Every step is
# resumable: run the script again (same arguments) and each training continues from its last.ckpt
# (--resume), finished runs are skipped.
#
#   bash scripts/camera_experiment.sh bench            # the benchmark (runs/synth_bench, ~20-35 min on 1 core)
#   bash scripts/camera_experiment.sh l                # -L teacher (runs/cam/l)
#   bash scripts/camera_experiment.sh c SEED           # -C student (runs/cam/c_sSEED)
#   bash scripts/camera_experiment.sh c SEED NAME K=V  # -C variant, e.g. NAME=w075 loss.class_weight_exponent=0.75
#   bash scripts/camera_experiment.sh d SEED           # -D student (runs/cam/d_sSEED; needs runs/cam/l/best.pt)
#   bash scripts/camera_experiment.sh d SEED NAME K=V  # -D ablation, e.g. NAME=no_logit loss.ratio_logit_kl=0
#   bash scripts/camera_experiment.sh eval RUN         # held-out scores of runs/cam/RUN/best.pt
#
# Environment: OUT (runs folder, default runs/cam), STEPS_L (default 500), STEPS (student schedule, default 250), VAL_EVERY (students, 50),
# VAL_EVERY_L (100), OMP_NUM_THREADS (default 1). On 2 cores run two arms at a time (~4.3 s per -L / -C step
# and ~9 s per -D step on one thread each: -L ~40 min, -C ~25 min, -D ~45 min with validations). Logs: runs/cam/<run>/train.log. Source scripts/env.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
BENCH=runs/synth_bench
OUT="${OUT:-runs/cam}"
STEPS_L="${STEPS_L:-500}"
STEPS="${STEPS:-250}"
VAL_EVERY="${VAL_EVERY:-50}"
VAL_EVERY_L="${VAL_EVERY_L:-100}"
TRAIN_SEQS="00 01 02 03 04 05 06 07 08 09 10 11"
HELDOUT_SEQS="20 21 22 23"

data_args() {
  echo --data "$BENCH/data" --labels "$BENCH/labels" --stereo "$BENCH/stereo" --sequences-train $TRAIN_SEQS \
       --sequences-val $HELDOUT_SEQS --num-workers 0 --accelerator cpu --no-progress --val-every "$VAL_EVERY" \
       --ckpt-every 25
}

# train RUN STEPS [--init-from FILE] [other l2cocc train args]: a fresh run, or --resume of an unfinished one
train() {
  local run="$1" steps="$2"; shift 2
  local dir="$OUT/$run"
  if [ -f "$dir/last.pt" ] && grep -q "finished at step $steps" "$dir/train.log" 2>/dev/null; then
    echo "$run: finished"; return 0
  fi
  mkdir -p "$dir"
  local args=("$@")
  if [ -f "$dir/checkpoints/last.ckpt" ]; then  # --resume continues the run's own weights: no --init-from
    local kept=() skip=0
    for a in "${args[@]}"; do
      if [ "$skip" = 1 ]; then skip=0; continue; fi
      if [ "$a" = "--init-from" ]; then skip=1; continue; fi
      kept+=("$a")
    done
    args=("${kept[@]}" --resume)
  fi
  echo "+ l2cocc train ${args[*]} $(data_args) --max-steps $steps --out $dir" | tee -a "$dir/commands.txt"
  nice -n 5 l2cocc train "${args[@]}" $(data_args) --max-steps "$steps" --out "$dir" >> "$dir/train.log" 2>&1
}

# the initial student weights of a seed: one file shared by -C and -D
init_weights() {
  local seed="$1" path="$OUT/init_s$1.pt"
  if [ ! -f "$path" ]; then
    mkdir -p "$OUT"
    python -P -c "
import torch
from l2cocc_ros.core.checkpoint import save_checkpoint
from l2cocc_ros.core.config import get_preset
from l2cocc_ros.core.model.l2cocc import build_model
torch.manual_seed($seed)
exp = get_preset('micro_l2cocc_c')
save_checkpoint('$path', build_model(exp.model), exp, extra={'seed': $seed, 'source': 'random init'})"
  fi
  echo "$path"
}

# variant_config PRESET NAME K=V...: a YAML of the preset with the given overrides ($OUT/NAME.yaml); prints its path
variant_config() {
  local preset="$1" name="$2"; shift 2
  mkdir -p "$OUT"
  python -P -c "
import sys, yaml
over = {}
for kv in sys.argv[2:]:
    key, value = kv.split('=', 1)
    node = over
    *parents, leaf = key.split('.')
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = yaml.safe_load(value)
print(yaml.safe_dump({'preset': sys.argv[1], **over}))" "$preset" "$@" > "$OUT/$name.yaml"
  echo "$OUT/$name.yaml"
}

case "${1:-}" in
  bench) nice -n 5 l2cocc synth-benchmark --out "$BENCH" --no-progress ;;
  l) VAL_EVERY="$VAL_EVERY_L" train l "$STEPS_L" --config micro_l2cocc_l --seed 1 ;;
  c | d)
    arm="$1" seed="$2" name="${3:-}"; shift $(( $# < 3 ? $# : 3 ))
    cfg="micro_l2cocc_$arm"
    [ -z "$name" ] || cfg="$(variant_config "$cfg" "${arm}_$name" "$@")"
    if [ "$arm" = c ]; then
      train "c${name:+_$name}_s$seed" "$STEPS" --config "$cfg" --seed "$seed" --init-from "$(init_weights "$seed")"
    else
      train "d${name:+_$name}_s$seed" "$STEPS" --config "$cfg" --seed "$seed" --teacher "$OUT/l/best.pt" \
        --init-from "$(init_weights "$seed")"
    fi ;;
  eval) l2cocc eval -d "$BENCH/data" -s $HELDOUT_SEQS --checkpoint "$OUT/$2/best.pt" --stereo-root "$BENCH/stereo" ;;
  *) sed -n 2,16p "$0"; exit 2 ;;
esac
