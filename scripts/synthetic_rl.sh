#!/usr/bin/env bash
# RLOO against each synthetic-gold proxy (issue 16 item 4; docs/reward-hacking.md "RL against the synthetic
# gold"). Needs the outputs of `smorm synthetic configs/synthetic/cpu.yaml` (the gold, the proxies and the
# fixed ID / OOD prompt sets under runs/synthetic-cpu). One run per proxy, one after another (one heavy
# torch job at a time); a proxy whose rl_summary.json exists is skipped, so an interrupted queue resumes.
#
#   scripts/synthetic_rl.sh [NOISE] [PROXY ...]     # default: noise 0.25, every proxy below
#   RL_SEED=1 scripts/synthetic_rl.sh 0.25 bt smorm:F   # another RL seed (sampling, batch order and the
#                                                    # evaluation streams) into rl/noise-0.25-seed1/
#
# Every proxy trains on the same 64 prompts (held out from the BT proxy's D_S, which every proxy shares)
# and is evaluated on the same 32 ID and 32 OOD prompts as Best-of-N. The step budget is this CPU's: 16
# steps of 4 prompts x 4 completions at lr 2e-4 (20x 000 Table 10's 1e-5, for 16 steps instead of the
# paper's ~1,250), constant schedule, no KL penalty (Table 10), bf16 autocast where the CPU has it.
set -euo pipefail
SYN=${SYN:-runs/synthetic-cpu}
NOISE=${1:-0.25}
shift || true
PROXIES=("$@")
if [ ${#PROXIES[@]} -eq 0 ]; then PROXIES=(bt smorm:F smorm:M baseline-sm grm odin bt-uwo); fi
SMORM=${SMORM:-smorm}
RL_SEED=${RL_SEED:-0}
RUNS="$SYN/rl/noise-$NOISE"
if [ "$RL_SEED" != 0 ]; then RUNS="$RUNS-seed$RL_SEED"; fi
for proxy in "${PROXIES[@]}"; do
  name=${proxy/:/-}
  out="$RUNS/$name"
  if [ -f "$out/rl_summary.json" ]; then echo "skip $name (done: $out)"; continue; fi
  echo "=== RLOO on $name (noise $NOISE) -> $out"
  "$SMORM" rl --reward "$SYN/runs/noise-$NOISE/$proxy" --gold "$SYN/gold:M" \
    --prompts id --heldout-from "$SYN/runs/noise-$NOISE/bt" --num-prompts 64 --prompt-seed 1 --max-prompt-chars 400 \
    --eval-file "$SYN/prompts/id.jsonl" --ood-file "$SYN/prompts/ood.jsonl" --eval-every 8 \
    --steps 16 --prompts-per-step 4 --num-generations 4 --max-completion-length 48 \
    --lr 2e-4 --lr-scheduler constant --gold-every 2 --beta 0 --precision auto --seed "$RL_SEED" \
    --out "$out"
done
# The comparison: rl_report.md (last-step changes, gold paired against BT) and rl_report.png.
"${PYTHON:-python}" -m smorm.rlhf.rl_report "$RUNS" --title "RLOO against the synthetic gold (noise $NOISE, RL seed $RL_SEED)"
