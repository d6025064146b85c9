#!/usr/bin/env bash
# The appendix's Table 1 ablation on Fashion-MNIST (5 normal vs 5 anomalous classes), paper preset:
# five trainings that add one component at a time, each evaluated with the model choosing the
# class (classifier), image AUROC from the mean of the map. Writes docs/ablation.md.
#
#   SPLIT=0,1,2,3,4 LIMIT=100 EPOCHS=12 LR=5e-4 bash scripts/ablation.sh   # docs/ablation.md
#
# SEED (default 133, the reference's) changes initialisation and shuffling; a run with another seed
# gets its own section (and output folder), so seeds can be compared.
#
# RESTART (default 0, the released EMA codebooks) is `--codebook-restart` for every row (not in the
# paper; docs/quality.md "Codebook collapse"); a run with it gets its own section and folder.
#
# LIMIT keeps that many training and normal test images per class (the dataset's `limit=` option).
# Unset LIMIT for the full protocol (30 000 training images): its own section and folder
# (`runs/ablation-<split>-full`); on a 2-core CPU at this width an epoch takes about 15 minutes.
#
# Re-running the command continues where it stopped: a row with eval.json is done, a finished
# training (model.safetensors) is only evaluated, an interrupted one resumes from its checkpoint.
# The rows share one feature cache (same data, same frozen backbone), extracted once.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hvq-target}"
split="${SPLIT:-0,1,2,3,4}"
epochs="${EPOCHS:-20}"
lr="${LR:-5e-4}"
device="${DEVICE:-cpu}"
data="fashion-mnist:${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}?split=$split${LIMIT:+&limit=$LIMIT}"
out="${OUT:-runs/ablation-${split//,/}}"
width="--embed-dim ${EMBED_DIM:-64} --ffn-dim ${FFN_DIM:-256} --codes ${CODES:-64}"
# docs/ablation.md was trained without transformer dropout (before `--dropout` existed, when the
# port had none): 0 by default here so the command reproduces it; DROPOUT=0.1 is the reference's.
dropout="${DROPOUT:-0}"
seed="${SEED:-133}"
restart="${RESTART:-0}"
full=$([ -n "${LIMIT:-}" ] && echo 0 || echo 1)
[ "$full" = 0 ] || out="$out-full"
[ "$seed" = 133 ] || out="$out-seed$seed"
[ "$restart" = 0 ] || out="$out-restart$restart"
# HVQ_BIN runs a given binary instead of building one (e.g. a copy that a later build cannot
# overwrite while the five trainings run).
if [ -n "${HVQ_BIN:-}" ]; then
  hvq="$HVQ_BIN"
else
  cargo build --release -p core -p desktop --bin hvq
  hvq="$CARGO_TARGET_DIR/release/hvq"
fi

rows=(
  "single VQ|--single-vq --no-codebook-switching --no-expert-switching --pot-weight 0"
  "+ codebook switching|--single-vq --no-expert-switching --pot-weight 0"
  "hierarchical VQ|--no-expert-switching --pot-weight 0"
  "+ expert switching|--pot-weight 0"
  "+ POT (full paper model)|"
)
for i in "${!rows[@]}"; do
  name="${rows[$i]%%|*}"
  flags="${rows[$i]#*|}"
  dir="$out/row$((i + 1))"
  echo "=== row $((i + 1)): $name ($flags)"
  if [ -f "$dir/eval.json" ]; then
    echo "done before: $dir/eval.json"
    continue
  fi
  shared="$out/feature-cache.safetensors"
  mkdir -p "$dir"
  [ -f "$shared" ] && [ ! -e "$dir/feature-cache.safetensors" ] && ln -s ../feature-cache.safetensors "$dir/feature-cache.safetensors"
  if [ ! -f "$dir/model.safetensors" ]; then
    # shellcheck disable=SC2086
    "$hvq" train --data "$data" --out "$dir" --preset paper $flags $width --epochs "$epochs" --lr "$lr" \
      --dropout "$dropout" --seed "$seed" --codebook-restart "$restart" --device "$device" --checkpoint-every 1 \
      $( [ -f "$dir/checkpoint.safetensors" ] && echo --resume )
  fi
  # The first row extracted the features: share them with the others.
  if [ ! -e "$shared" ] && [ -f "$dir/feature-cache.safetensors" ] && [ ! -L "$dir/feature-cache.safetensors" ]; then
    mv "$dir/feature-cache.safetensors" "$shared"
    ln -s ../feature-cache.safetensors "$dir/feature-cache.safetensors"
  fi
  "$hvq" eval --weights "$dir" --data "$data" --class auto --json "$dir/eval.json" --device "$device"
done

python3 - "$out" "$data" "$epochs" "$lr" "$split" "$dropout" "$seed" "$full" "$restart" <<'PY'
# One section per split in docs/ablation.md, between markers: a run replaces its split's section
# (or adds it before the hand-written "## Reading"), and leaves the other splits' sections alone.
import json, re, sys
out, data, epochs, lr, split, dropout, seed, full, restart = sys.argv[1:]
restarted = float(restart) > 0
key = split + (" full" if full == "1" else "") + ("" if seed == "133" else f" seed {seed}") + (f" restart {restart}" if restarted else "")
title = f"Split {{{split}}}" + (", full protocol" if full == "1" else "") + ("" if seed == "133" else f", seed {seed}") + (f", codebook restart {restart}" if restarted else "")
paper = [71.1, 74.3, 77.6, 81.6, 87.8]
names = ["single VQ", "+ codebook switching", "hierarchical VQ", "+ expert switching", "+ POT (full paper model)"]
lines = ["| row | ours: Fashion-MNIST image AUROC | class accuracy (normal test images) | paper: CIFAR-10 AUROC |", "|---|---|---|---|"]
for i, (name, p) in enumerate(zip(names, paper)):
    m = json.load(open(f"{out}/row{i + 1}/eval.json"))
    acc = m.get("class_accuracy")
    lines.append(f"| {name} | {100 * m['mean']['image_auroc']:.1f} | {'-' if acc is None else f'{100 * acc:.1f} %'} | {p} |")
table = "\n".join(lines)
section = f"""<!-- split {key} -->
## {title}

Data `{data}`, {epochs} epochs per row at lr {lr}, transformer dropout {dropout}, seed {seed}{f", `--codebook-restart {restart}`" if restarted else ""}.

{table}
<!-- /split {key} -->"""
path = "docs/ablation.md"
try:
    doc = open(path).read()
except FileNotFoundError:
    doc = """# Ablation (appendix Table 1) on Fashion-MNIST

Generated by `scripts/ablation.sh` (Lite0 backbone, C 64, FFN 256, K 64, paper preset, class chosen by
the model's classifier at test time, image score = mean of the map, AUROC over the split's normal test
images and as many anomalous ones), one section per split.

## Reading
"""
marker = re.compile(rf"<!-- split {re.escape(key)} -->.*?<!-- /split {re.escape(key)} -->", re.S)
if marker.search(doc):
    doc = marker.sub(lambda _: section, doc)
else:
    doc = doc.replace("## Reading", section + "\n\n## Reading", 1)
open(path, "w").write(doc)
print(table)
PY
