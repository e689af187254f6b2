"""The RL comparison report: last-step changes and the paired gold difference, checked by hand."""

from __future__ import annotations

import json
import math

import pytest

from smorm.rlhf.rl_report import compare, load_runs, main, markdown


def _eval_rows(changes):
    return [{"step": s, "samples": 3, "proxy": p, "proxy_sem": ps, "gold": g, "gold_sem": gs}
            for s, p, ps, g, gs in changes]


def _write_run(folder, eval_rows, samples, seconds_per_step=40.0, lengths=(30.0, 45.0)):
    folder.mkdir(parents=True)
    summary = {"eval_rows": eval_rows, "eval_ood_rows": [], "cost": {"seconds_per_step": seconds_per_step},
               "seconds": 600.0, "rows": [{"completion_tokens": n} for n in lengths]}
    (folder / "rl_summary.json").write_text(json.dumps(summary))
    (folder / "rl_eval_samples.jsonl").write_text("".join(
        json.dumps({"step": step, "prompt": [{"role": "user", "content": f"q{i}"}], "completion": "c",
                    "proxy": 0.0, "gold": g}) + "\n" for step, golds in samples.items() for i, g in enumerate(golds)))


def test_the_last_evaluation_and_the_gold_paired_against_bt_by_hand(tmp_path):
    step0 = [0.0, 1.0, 2.0]
    _write_run(tmp_path / "bt", _eval_rows([(0, 0, 0, 0, 0), (8, 0.6, 0.2, 0.3, 0.1)]),
               {0: step0, 8: [0.5, 1.0, 2.9]})
    _write_run(tmp_path / "smorm-F", _eval_rows([(0, 0, 0, 0, 0), (8, 0.9, 0.3, -0.2, 0.4)]),
               {0: step0, 8: [1.5, 1.0, 4.9]})
    rows = {(r["name"], r["set"]): r for r in compare(load_runs(tmp_path))}
    assert set(rows) == {("bt", "id"), ("smorm-F", "id")}  # no OOD rows: none were written
    bt, smorm = rows["bt", "id"], rows["smorm-F", "id"]
    assert bt["proxy_z"] == pytest.approx(3.0) and bt["gold_z"] == pytest.approx(3.0)
    assert math.isnan(bt["gold_vs_ref"])  # the reference itself
    # per-prompt differences at step 8: (1.5-0.5, 1.0-1.0, 4.9-2.9) = (1, 0, 2): mean 1, sd 1, s.e.m. 1/sqrt(3)
    assert smorm["gold_vs_ref"] == pytest.approx(1.0)
    assert smorm["gold_vs_ref_sem"] == pytest.approx(1 / math.sqrt(3))
    assert smorm["proxy_z"] == pytest.approx(3.0) and smorm["gold_z"] == pytest.approx(-0.5)
    assert smorm["tokens_first"] == 30.0 and smorm["tokens_last"] == 45.0 and smorm["minutes"] == 10.0
    table = markdown(compare(load_runs(tmp_path)))
    assert "| smorm-F | ID | 8 | +0.900 ± 0.300 | +3.0 | -0.200 ± 0.400 | -0.5 | +1.000 ± 0.577 | 40.0 |" in table


def test_main_writes_the_table_and_the_figure(tmp_path, caplog):
    _write_run(tmp_path / "bt", _eval_rows([(0, 0, 0, 0, 0), (4, 0.2, 0.1, 0.1, 0.1)]), {0: [0.0, 1.0], 4: [0.1, 1.1]})
    with caplog.at_level("INFO", logger="smorm.rlhf.rl_report"):
        main([str(tmp_path)])
    assert (tmp_path / "rl_report.md").read_text().startswith("| proxy | set |")
    assert (tmp_path / "rl_report.png").stat().st_size > 0
    assert "| bt | ID | 4 |" in caplog.text and "| bt | ID | 4 |" in (tmp_path / "rl_report.md").read_text()
    with pytest.raises(SystemExit, match="no \\*/rl_summary.json"):
        main([str(tmp_path / "empty")])
