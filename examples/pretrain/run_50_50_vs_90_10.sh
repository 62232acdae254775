#!/usr/bin/env bash
# Two tiny cloned-language pre-training runs (50/50 and 90/10), per-language perplexity and the
# layer-wise similarity curves. Usage: examples/pretrain/run_50_50_vs_90_10.sh CORPUS TEST PARALLEL TOKENIZER OUT
# (CPU: a few minutes with the nano preset; OMP_NUM_THREADS=1 is much faster on a loaded machine.)
set -euo pipefail
CORPUS=$1; TEST=$2; PAR=$3; TOK=$4; OUT=$5
STEPS=${STEPS:-400}; PRESET=${PRESET:-nano}; SEQ=${SEQ:-64}; LASTN=${LASTN:-16}
for P in 0.5 0.1; do
  xlt pretrain --corpus "$CORPUS" --tokenizer "$TOK" --output_dir "$OUT/p$P" --preset "$PRESET" \
    --seq_len "$SEQ" --max_steps "$STEPS" --n_clones 1 --p_clone "$P" --per_device_train_batch_size 16 \
    --warmup_steps 40 --logging_steps 50 --save_steps 200 --disable_tqdm true --overwrite true \
    --data_cache "$OUT/token_cache"
  xlt eval ppl --model "$OUT/p$P" --corpus "$TEST" --context "$SEQ" --last_n "$LASTN" \
    --output "$OUT/ppl_p$P.json" --overwrite
done
xlt analyze similarity --model "$OUT/p0.5" "$OUT/p0.1" --label 50/50 90/10 --text "$PAR" \
  --n_inputs 200 --output_dir "$OUT/similarity" --overwrite
