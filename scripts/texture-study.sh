#!/usr/bin/env bash
# One row of the accuracy study on the synthetic defect set (docs/quality.md): builds the set from
# the textures scripts/setup.sh fetched (if not there yet), trains the configuration given (or
# resumes it), evaluates it and prints the metrics and the AUROC per defect kind and size.
#
#   NAME=paper-c64-e40 bash scripts/texture-study.sh --preset paper --epochs 40 --lr 5e-4 \
#     --embed-dim 64 --ffn-dim 256 --codes 64
#
# HVQ: the binary (default target/release/hvq); SET: the set's folder (default runs/defect-set);
# SET_SEED: the set's seed (default: the generator's).
set -euo pipefail
: "${NAME:?set NAME to name the run}"
hvq=${HVQ:-target/release/hvq}
textures=${HVQ_DATA_CACHE:-$HOME/.cache/hvq}/textures
set_dir=${SET:-runs/defect-set}
if [ ! -f "$set_dir/gravel/synthetic.json" ]; then
  "$hvq" synth-defects --out "$set_dir" ${SET_SEED:+--seed "$SET_SEED"} \
    --texture "$textures/brick.png" --texture "$textures/grass.png" --texture "$textures/gravel.png"
fi
out=runs/textures-$NAME
if [ ! -f "$out/model.safetensors" ]; then
  resume=""
  [ -f "$out/checkpoint.safetensors" ] && resume=--resume
  "$hvq" train --data "mvtec:$set_dir" --out "$out" --device cpu $resume "$@"
fi
"$hvq" eval --device cpu --data "mvtec:$set_dir" --weights "$out" --json "$out/metrics.json"
python3 scripts/defect_breakdown.py "$out/metrics.json" "$set_dir"
