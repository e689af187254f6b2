"""``smorm synthetic``: the synthetic-gold recipe end to end on tiny models, and the shipped recipe's plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from smorm.cli import app
from smorm.rlhf.synthetic import load_synthetic, plan
from smorm.settings import load_mapping
from tests.rlhf.rlhf_helpers import write_prompts
from tests.train.helpers import tiny_config

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "configs" / "synthetic" / "cpu.yaml"
FRUITS = ["apple", "pear", "plum", "fig", "kiwi", "lime", "date", "peach", "grape", "melon", "mango", "lemon"]


def write_pairs(path: Path) -> Path:
    """12 pairs with distinct prompts: the proxies train on 6, the other 6 are the held-out prompts."""
    rows = [
        {
            "prompt": f"Tell me about the {fruit}.",
            "chosen": f"The {fruit} is a fruit, sweet and fresh.",
            "rejected": f"{fruit}?",
        }
        for fruit in FRUITS
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_the_shipped_recipe_plans_and_its_files_exist(shared_data):
    config, base_dir = load_synthetic(SHIPPED)
    recipe = plan(config, base_dir, where=str(SHIPPED))
    assert (
        recipe.gold_run is not None and Path(recipe.gold_run.output_dir) == Path(config.output_dir) / "gold"
    )
    for source in config.pairs:
        assert (base_dir / source.path).is_file(), source.path
    assert [p.prompts for p in config.prompt_sets] == [
        "id",
        "../../../shared/data/eval/mt-bench/question.jsonl",
    ]
    assert (
        base_dir / config.prompt_sets[1].prompts
    ).resolve() == shared_data / "eval" / "mt-bench" / "question.jsonl"
    names = {p.method.name for p in recipe.proxies[0.25]}
    assert {"bt", "smorm", "grm", "odin", "baseline-sm", "bt-uwo"} <= names
    assert config.noise == [0.0, 0.25]
    # no absolute machine path in the shipped recipe
    assert not any(str(value).startswith("/") for value in _leaves(load_mapping(SHIPPED)))



def test_the_fair_rerun_reads_the_shipped_gold_in_f_with_three_seeds_of_bt_and_smorm(shared_data):
    path = SHIPPED.with_name("cpu-gold-f.yaml")
    config, base_dir = load_synthetic(path)
    recipe = plan(config, base_dir, where=str(path))
    shipped, _ = load_synthetic(SHIPPED)
    assert recipe.gold_run is None and recipe.gold_path == Path(shipped.output_dir) / "gold"
    assert config.gold.mode == "F" and config.noise == [0.25] and config.output_dir != shipped.output_dir
    runs = {p.method.name: p.runs[0] for p in recipe.proxies[0.25] if p.runs}
    assert {name: run.train.seed for name, run in runs.items() if name.startswith(("bt", "smorm"))} == {
        "bt": 1, "bt-s2": 2, "bt-s3": 3, "smorm": 1, "smorm-s2": 2, "smorm-s3": 3}
    assert all(runs[n].method == "smorm" and set(runs[n].model.heads) == {"single", "multi"}
               for n in ("smorm", "smorm-s2", "smorm-s3"))  # the YAML merge kept SMORM's heads and losses
    assert config.pairs == shipped.pairs and config.prompt_sets == shipped.prompt_sets  # the same data
    assert not any(str(value).startswith("/") for value in _leaves(load_mapping(path)))

def _leaves(tree):
    if isinstance(tree, dict):
        for value in tree.values():
            yield from _leaves(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _leaves(value)
    else:
        yield tree


def tiny_recipe(tmp_path: Path, backbone: Path) -> Path:
    """A recipe on the tiny Llama: a gold trained for 2 steps, every kind of proxy, two prompt sets."""
    gold = tiny_config(tmp_path / "gold-config", backbone, steps=2)
    gold["model"]["mode"] = "M"
    (tmp_path / "gold.yaml").write_text(yaml.safe_dump(gold))
    write_pairs(tmp_path / "toy-pairs.jsonl")
    write_prompts(tmp_path / "ood.jsonl", ["Write a haiku.", "Name a river.", "Why is the sky blue?"])
    train = {
        "seed": 7,  # not the gold's (42, the default): the recipe refuses a proxy at the gold's seed
        "trunk": "full",
        "max_steps": 2,
        "pair_batch_size": 4,
        "rating_batch_size": 4,
        "lr": 1e-2,
        "warmup_ratio": 0.0,
        "log_every": 1,
    }
    recipe = {
        "output_dir": str(tmp_path / "out"),
        "gold": {"config": "gold.yaml"},
        "pairs": [{"name": "toy", "path": "toy-pairs.jsonl", "format": "pairs", "train": 6,
                   "heldout_from": 7}],
        "noise": [0.0, 0.25],
        "noise_seed": 1,
        "proxy_base": {
            "method": "bt",
            "model": {"backbone": str(backbone), "heads": {"single": {"kind": "linear"}}, "mode": "F"},
            "data": {"max_length": 48},
            "losses": [{"name": "bt"}],
            "train": train,
        },
        "methods": [
            {"name": "bt"},
            {
                "name": "smorm",
                "gold_ratings": True,
                "modes": ["F", "M"],
                "config": {
                    "method": "smorm",
                    "model": {
                        "heads": {"single": {"kind": "linear"}, "multi": {"kind": "linear"}},
                        "mode": "M",
                    },
                    "losses": [{"name": "bt"}, {"name": "regression"}],
                },
            },
            {
                "name": "grm",
                "config": {
                    "method": "grm_sft",
                    "model": {"with_lm_head": True},
                    "losses": [{"name": "grm_sft", "options": {"alpha": 0.01, "beta": 0.1}}],
                },
            },
            {
                "name": "odin",
                "config": {
                    "method": "odin",
                    "model": {"heads": {"single": {"kind": "linear"}, "length": {"kind": "linear"}}},
                    "losses": [{"name": "odin"}],
                },
            },
            {
                "name": "morm",
                "gold_ratings": True,
                "curves": False,
                "config": {
                    "method": "morm",
                    "model": {"heads": {"multi": {"kind": "linear"}}, "mode": "L"},
                    "data": {"pairs": []},
                    "losses": [{"name": "regression"}],
                },
            },
            {"name": "baseline-sm", "baseline_sm": ["bt", "morm"]},
            {"name": "bt-uwo", "ensemble": {"seeds": [0, 1], "combine": "uwo", "uwo_lambda": 0.5}},
        ],
        "prompt_sets": [
            {"name": "id", "prompts": "id", "num_prompts": 4},
            {"name": "ood", "prompts": "ood.jsonl", "num_prompts": 3},
        ],
        "bon": {
            "policy": str(backbone),
            "sampling": {"num_samples": 3, "max_new_tokens": 4},
            "benches": [],
            "device": "cpu",
        },
        "device": "cpu",
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def finished_recipe(tmp_path_factory, tiny_llama_dir):
    folder = tmp_path_factory.mktemp("synthetic")
    path = tiny_recipe(folder, tiny_llama_dir)
    result = CliRunner().invoke(app, ["synthetic", str(path), "--quiet"])
    assert result.exit_code == 0, result.output
    return {"recipe": path, "out": folder / "out", "output": result.output}


def test_the_noisy_labels_flip_the_expected_fraction(finished_recipe):
    labels = finished_recipe["out"] / "labels"
    clean, noisy = read_rows(labels / "noise-0" / "toy.jsonl"), read_rows(labels / "noise-0.25" / "toy.jsonl")
    assert len(clean) == len(noisy) == 12  # distinct responses: no tie is dropped
    flipped = [i for i, (a, b) in enumerate(zip(clean, noisy)) if a["chosen"] != b["chosen"]]
    assert len(flipped) == round(0.25 * 12) == 3
    for i in flipped:  # the same pair, chosen and rejected swapped, margin kept
        assert (noisy[i]["chosen"], noisy[i]["rejected"]) == (clean[i]["rejected"], clean[i]["chosen"])
        assert noisy[i]["margin"] == clean[i]["margin"] and noisy[i]["prompt"] == clean[i]["prompt"]
    provenance = json.loads((labels / "noise-0.25" / "toy.provenance.json").read_text())
    assert [r - 1 for r in provenance["flipped_rows"]] == flipped and provenance["noise"] == 0.25
    assert json.loads((labels / "noise-0" / "toy.provenance.json").read_text())["counts"]["flipped"] == 0
    summary = json.loads((finished_recipe["out"] / "synthetic.json").read_text())
    # the gold scored the 24 responses once, for the first noise level; the second read the kept scores
    assert summary["labels"]["noise-0"]["toy"]["scored_now"] == 24
    assert summary["labels"]["noise-0.25"]["toy"]["scored_now"] == 0


def test_the_proxies_train_on_the_relabelled_files(finished_recipe):
    out = finished_recipe["out"]
    for tag in ("noise-0", "noise-0.25"):
        label_file = (out / "labels" / tag / "toy.jsonl").resolve()
        for run in ("bt", "smorm", "grm", "odin", "bt-uwo/seed-0", "bt-uwo/seed-1"):
            config = json.loads((out / "runs" / tag / run / "config.json").read_text())
            assert [(s["path"], s["format"], s["limit"]) for s in config["data"]["pairs"]] == [
                (str(label_file), "pairs", 6)
            ], run
        smorm = json.loads((out / "runs" / tag / "smorm" / "config.json").read_text())
        morm = json.loads((out / "runs" / tag / "morm" / "config.json").read_text())
        ratings = str((out / "labels" / "train-ratings.jsonl").resolve())
        assert [s["path"] for s in smorm["data"]["ratings"]] == [ratings] and smorm["data"][
            "rating_scale"
        ] == "raw"
        assert morm["data"]["pairs"] == [] and [s["path"] for s in morm["data"]["ratings"]] == [ratings]
        composite = json.loads((out / "runs" / tag / "bt-uwo" / "smorm_composite.json").read_text())
        assert (composite["combine"], composite["uwo_lambda"]) == ("uwo", 0.5)
        assert json.loads((out / "runs" / tag / "baseline-sm" / "smorm_composite.json").read_text())[
            "kind"
        ] == ("baseline_sm")
    # the gold's ratings cover exactly the responses of the 6 training pairs, never a held-out prompt's
    trained = read_rows(out / "labels" / "noise-0" / "toy.jsonl")[:6]
    expected = {(json.dumps(r["prompt"]), text) for r in trained for text in (r["chosen"], r["rejected"])}
    rated = {
        (json.dumps(r["prompt"]), r["response"]) for r in read_rows(out / "labels" / "train-ratings.jsonl")
    }
    assert rated == expected


def test_best_of_n_runs_against_the_gold_on_shared_pools(finished_recipe):
    out = finished_recipe["out"]
    held_out = {json.dumps(r["prompt"]) for r in read_rows(out / "labels" / "noise-0" / "toy.jsonl")[6:]}
    id_prompts = read_rows(out / "prompts" / "id.jsonl")
    assert len(id_prompts) == 4 and {json.dumps(r["prompt"]) for r in id_prompts} <= held_out
    for tag in ("noise-0", "noise-0.25"):
        for name, prompts in (("id", 4), ("ood", 3)):
            summary = json.loads((out / "bon" / tag / name / "summary.json").read_text())
            assert summary["settings"]["pool"] == str(out / "pools" / f"{name}.jsonl.gz")
            assert summary["pool"]["prompts"] == prompts and summary["pool"]["samples_per_prompt"] == 3
            labels = [curve["proxy"] for curve in summary["curves"]]
            assert labels == ["bt", "smorm:F", "smorm:M", "grm", "odin", "baseline-sm", "bt-uwo"]
            assert summary["settings"]["gold"] == str(out / "gold")
    assert sorted(p.name for p in (out / "pools").iterdir()) == [
        "id.jsonl.gz",
        "id.jsonl.gz.meta.json",
        "ood.jsonl.gz",
        "ood.jsonl.gz.meta.json",
    ]


def test_a_rerun_skips_every_finished_step(finished_recipe, monkeypatch):
    import smorm.rlhf.generate
    import smorm.train.trainer
    from smorm.rlhf.synthetic import run_synthetic

    def refuse(*args, **kwargs):
        raise AssertionError("a finished recipe must not train or sample again")

    monkeypatch.setattr(smorm.train.trainer, "train", refuse)
    monkeypatch.setattr(smorm.rlhf.generate, "load_policy", refuse)
    result = run_synthetic(finished_recipe["recipe"], show_progress=False, log=lambda _: None)
    assert all(entry["scored_now"] == 0 for level in result["labels"].values() for entry in level.values())


def test_recipe_errors_are_reported_before_anything_runs(tmp_path, tiny_llama_dir):
    path = tiny_recipe(tmp_path, tiny_llama_dir)
    raw = yaml.safe_load(path.read_text())
    bad = {**raw, "methods": [*raw["methods"], {"name": "bsm2", "baseline_sm": ["bt", "nope"]}]}
    path.write_text(yaml.safe_dump(bad))
    result = CliRunner().invoke(app, ["synthetic", str(path)])
    assert result.exit_code == 2 and "baseline_sm names ['nope']" in result.output
    path.write_text(yaml.safe_dump({**raw, "bon": {**raw["bon"], "pool": "x.jsonl"}}))
    result = CliRunner().invoke(app, ["synthetic", str(path)])
    assert result.exit_code == 2 and "['pool'] are set by the recipe" in result.output
    path.write_text(yaml.safe_dump({**raw, "noise": [0.0, 1.0]}))
    result = CliRunner().invoke(app, ["synthetic", str(path)])
    assert result.exit_code == 2 and "noise: 1.0 is not in [0, 1)" in result.output
    path.write_text(yaml.safe_dump({**raw, "bon": {**raw["bon"], "bf16": True}}))  # one knob for all scoring
    result = CliRunner().invoke(app, ["synthetic", str(path)])
    assert result.exit_code == 2 and "bon.bf16: set scoring_precision instead" in result.output
    # a proxy at the gold's seed and backbone starts with the gold's heads: a near-copy, refused
    at_gold_seed = {**raw["proxy_base"], "train": {**raw["proxy_base"]["train"], "seed": 42}}
    path.write_text(yaml.safe_dump({**raw, "proxy_base": at_gold_seed}))
    result = CliRunner().invoke(app, ["synthetic", str(path)])
    assert result.exit_code == 2 and "methods.bt: train.seed 42 is the gold's seed" in result.output
    members = [{"name": "ens", "ensemble": {"seeds": [3, 42], "combine": "mean"}}]
    path.write_text(yaml.safe_dump({**raw, "methods": [*raw["methods"], *members]}))
    result = CliRunner().invoke(app, ["synthetic", str(path)])
    assert result.exit_code == 2 and "methods.ens: train.seed 42 is the gold's seed" in result.output
    assert not (tmp_path / "out").exists()


def test_pools_only_samples_the_pools_where_the_recipe_keeps_them_before_any_gold(tmp_path, tiny_llama_dir):
    path = tiny_recipe(tmp_path, tiny_llama_dir)
    recipe = yaml.safe_load(path.read_text())
    recipe["pools_dir"] = "kept-pools"  # relative to the recipe file, like a repo data folder
    path.write_text(yaml.safe_dump(recipe))
    result = CliRunner().invoke(app, ["synthetic", str(path), "--quiet", "--pools-only"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    assert not (out / "gold").exists() and not (out / "labels").exists()  # nothing trained or relabelled
    pools = tmp_path / "kept-pools"
    assert sorted(p.name for p in pools.iterdir()) == [
        "id.jsonl.gz", "id.jsonl.gz.meta.json", "ood.jsonl.gz", "ood.jsonl.gz.meta.json"]
    from smorm.rlhf.pools import read_pool

    id_pool = read_pool(pools / "id.jsonl.gz")
    trained = {f"Tell me about the {fruit}." for fruit in FRUITS[:7]}  # the first heldout_from records
    assert len(id_pool) == 4 and all(len(e.responses) == 3 for e in id_pool)
    assert not {e.prompt[-1]["content"] for e in id_pool} & trained
    assert len(read_pool(pools / "ood.jsonl.gz")) == 3


def test_an_in_distribution_prompt_a_proxy_trained_on_is_refused(finished_recipe, tmp_path):
    from smorm.rlhf.synthetic import check_heldout

    config, base_dir = load_synthetic(finished_recipe["recipe"])
    recipe = plan(config, base_dir)
    first_trained = read_rows(finished_recipe["out"] / "labels" / "noise-0" / "toy.jsonl")[0]["prompt"]
    held_out = read_rows(finished_recipe["out"] / "prompts" / "id.jsonl")
    check_heldout(recipe, {"id": finished_recipe["out"] / "prompts" / "id.jsonl"})  # the recipe's own: fine
    bad = tmp_path / "id.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in [held_out[0], {"prompt": first_trained}]))
    with pytest.raises(ValueError, match=r"id\.jsonl:2: prompt: a proxy trained on"):
        check_heldout(recipe, {"id": bad})


@pytest.mark.parametrize(("precision", "native", "expected"),
                         [("fp32", True, False), ("bf16", False, True), ("auto", True, True), ("auto", False, False)])
def test_scoring_precision_resolves_on_the_device(tmp_path, tiny_llama_dir, monkeypatch, precision, native, expected):
    from smorm.models import devices

    monkeypatch.setattr(devices, "fast_bf16", lambda device: native)
    config, base_dir = load_synthetic(tiny_recipe(tmp_path, tiny_llama_dir))
    assert plan(config.model_copy(update={"scoring_precision": precision}), base_dir).scoring_bf16() is expected


def test_the_labels_and_the_pool_scores_record_their_precision(finished_recipe):
    provenance = json.loads((finished_recipe["out"] / "labels" / "noise-0" / "toy.provenance.json").read_text())
    assert provenance["precision"] == "fp32"  # the recipe's default scoring_precision
    summary = json.loads((finished_recipe["out"] / "bon" / "noise-0" / "id" / "summary.json").read_text())
    assert summary["settings"]["bf16"] is False


def test_a_bad_record_stops_the_recipe_before_the_gold_trains_unless_skipped(tmp_path, tiny_llama_dir):
    path = tiny_recipe(tmp_path, tiny_llama_dir)
    pairs = tmp_path / "toy-pairs.jsonl"
    lines = pairs.read_text().splitlines()
    lines.insert(2, json.dumps({"prompt": "Say hi.", "chosen": "Hi!", "rejected": ""}))  # line 3: empty rejected
    pairs.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(app, ["synthetic", str(path), "--quiet"])
    assert result.exit_code != 0
    assert f"{pairs}:3" in str(result.exception) and "rejected" in str(result.exception)
    assert not (tmp_path / "out" / "gold").exists()  # nothing trained before the data was read
    recipe = yaml.safe_load(path.read_text())
    recipe["pairs"][0]["on_error"] = "skip"
    path.write_text(yaml.safe_dump(recipe))
    config, base_dir = load_synthetic(path)
    from smorm.rlhf.synthetic import check_sources

    check_sources(plan(config, base_dir))  # the skipped record no longer stops it
    recipe["pairs"][0].update(train=len(lines) - 1, heldout_from=len(lines))  # every valid pair: none left
    path.write_text(yaml.safe_dump(recipe))
    config, base_dir = load_synthetic(path)
    with pytest.raises(ValueError, match="valid pairs, not more than train"):
        check_sources(plan(config, base_dir))
