"""Evaluation with shared-prompt packing gives the report of unpacked scoring."""

from __future__ import annotations

import pytest

from smorm.eval.runner import BenchSpec, evaluate_model, load_benchmarks, packs_by_default, score_sequences
from tests.eval.test_eval_batch_size import TOLERANCE, flatten, is_decided_by_order
from tests.models.test_scoring import spy_pack_rows


def test_packed_and_unpacked_reports_agree(tiny_reward_model, bench_files, monkeypatch):
    from smorm.data.formatting import Formatter

    specs = [BenchSpec(kind, str(path)) for kind, path in bench_files.items()]
    loaded = load_benchmarks(specs)
    formatter = Formatter(tiny_reward_model.tokenizer, tiny_reward_model.config.max_length)
    encoded = [formatter.encode(p, r) for p, r in loaded.table.items]
    sequences, starts = [e.input_ids for e in encoded], [e.response_start for e in encoded]
    packed_tokens = spy_pack_rows(monkeypatch)
    assert packs_by_default(tiny_reward_model)
    unpacked = score_sequences(tiny_reward_model, sequences, 4, False, False, response_starts=starts, pack=False)
    assert packed_tokens == []
    packed = score_sequences(tiny_reward_model, sequences, 4, False, False, response_starts=starts)
    assert len(packed_tokens) > 1  # packing ran, in several batches
    for name in ("single", "attributes", "pooled"):
        assert (getattr(packed, name) - getattr(unpacked, name)).abs().max().item() <= TOLERANCE, name

    with_packing = evaluate_model(tiny_reward_model, specs, batch_size=4, show_progress=False)
    without = evaluate_model(tiny_reward_model, specs, batch_size=4, show_progress=False, pack=False)
    assert with_packing["shared_prompt_packing"] and not without["shared_prompt_packing"]
    flat_packed, flat_unpacked = flatten(with_packing["benchmarks"]), flatten(without["benchmarks"])
    assert flat_packed.keys() == flat_unpacked.keys()
    assert sum(map(is_decided_by_order, flat_packed)) > 100
    for key, value in flat_unpacked.items():
        if is_decided_by_order(key):
            assert flat_packed[key] == value, key  # accuracies, their CIs, counts: exactly equal
        else:
            assert flat_packed[key] == pytest.approx(value, abs=TOLERANCE, rel=TOLERANCE), key
