#!/usr/bin/env bash
# The GPU checks and measurements of BENCHMARKS.md ("On a GPU"), in one run of about ten minutes:
#   1. tests/test_cuda.py: tracing, batched edits and a whole run give the CPU's results on CUDA;
#   2. `locedit bench edit --compare` on random-weight GPT-J-6B (random:gptj-6b) in bfloat16 without the
#      essence score, 32 facts, the batched path with 32, 8 and 1 facts per batch (the oracle on 2 facts);
#   3. `locedit bench trace` on the same model (float32, MLP, window 10, 10 samples);
#   4. ROME's comparison in float32 on 8 facts (the fidelity figures).
# Run it from the repository root with CUDA torch and locedit's dependencies importable, LOCEDIT_DATA_DIR set
# (WikiText for the key statistics, known_1000.json for the tiny models' noise level). Each step has its own
# time limit; every result lands in $OUT (default: gpu-results/) as soon as it is written, and `bench edit`
# prints each method's line on stderr as soon as it is measured.
set -uo pipefail
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
LOCEDIT=(python3 -m locedit.cli.main)
GPTJ=(-m random:gptj-6b --device cuda --compare --no-essence --mom2-tokens 20000 --json)

{ nvidia-smi -L; python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers",
  transformers.__version__, torch.cuda.get_device_name())'; } 2>&1 | tee "$OUT/machine.txt"
timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py --tb=short -W ignore > "$OUT/test_cuda.txt" 2>&1; tail -3 "$OUT/test_cuda.txt"
timeout 300 "${LOCEDIT[@]}" bench edit "${GPTJ[@]}" --dtype bfloat16 --facts 32 --oracle-facts 2 --batch 32 --batch 8 \
  --batch 1 --method rome --method memit > "$OUT/bench_edit_gptj_bf16.json" 2> "$OUT/bench_edit_gptj_bf16.err"
echo "bench edit bfloat16: exit $?"
timeout 90 "${LOCEDIT[@]}" bench trace -m random:gptj-6b --device cuda --dtype float32 --facts 2 --kind mlp --window 10 \
  --dataset src/locedit/data/demo_facts.json --json > "$OUT/bench_trace_gptj.json" 2> "$OUT/bench_trace_gptj.err"
echo "bench trace: exit $?"
timeout 150 "${LOCEDIT[@]}" bench edit "${GPTJ[@]}" --dtype float32 --facts 8 --oracle-facts 2 --batch 8 --method rome \
  > "$OUT/bench_edit_gptj_fp32.json" 2> "$OUT/bench_edit_gptj_fp32.err"
echo "bench edit float32: exit $?"
