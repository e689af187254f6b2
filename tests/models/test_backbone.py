"""Backbone loading: tiny local folders, refusal of pickle / missing ids, embedded MiniLM and SmolLM2.

The SmolLM2 tests convert the embedded GGUF once per session (module-scoped fixture) into a
temporary cache and compare the result with the GGUF loaded directly by transformers.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest
import torch

from smorm.models import backbone as backbone_module
from smorm.models.backbone import (
    CONVERSION_MARKER,
    PLAIN_CHAT_TEMPLATE,
    embedded_backbone_path,
    ensure_chat_template,
    ensure_converted_gguf,
    ensure_pad_token,
    is_decoder_config,
    load_backbone,
    resolve_backbone,
)
from smorm.testing import CHATML_TEMPLATE

torch.set_num_threads(1)

SMOL = "smollm2-135m-instruct"


# --------------------------------------------------------------------------------------------
# Tiny Hugging Face folders
# --------------------------------------------------------------------------------------------


def test_tiny_llama_loads_without_lm_head(tiny_llama_dir: Path) -> None:
    loaded = load_backbone(str(tiny_llama_dir))
    assert type(loaded.model).__name__ == "LlamaModel"
    assert not hasattr(loaded.model, "lm_head")
    assert loaded.is_decoder is True
    assert loaded.hidden_size == 32
    assert loaded.local_path == str(tiny_llama_dir.resolve())
    assert loaded.ref == str(tiny_llama_dir)
    assert loaded.tokenizer.pad_token == "<|pad|>"  # the tokenizer's own pad is kept
    assert loaded.tokenizer.chat_template == CHATML_TEMPLATE
    ids = loaded.tokenizer("hello", return_tensors="pt")["input_ids"]
    hidden = loaded.model(input_ids=ids).last_hidden_state
    assert hidden.shape == (1, 5, 32)  # byte-level tokenizer: one token per byte


def test_tiny_llama_loads_with_lm_head(tiny_llama_dir: Path) -> None:
    with_head = load_backbone(str(tiny_llama_dir), with_lm_head=True)
    without_head = load_backbone(str(tiny_llama_dir))
    assert type(with_head.model).__name__ == "LlamaForCausalLM"
    ids = torch.tensor([[1, 2, 3]])
    logits = with_head.model(input_ids=ids).logits
    assert logits.shape == (1, 3, len(with_head.tokenizer))
    # the trunk under the LM head is the same checkpoint as the headless load
    for name, tensor in without_head.model.state_dict().items():
        assert torch.equal(with_head.model.model.state_dict()[name], tensor), name


def test_dtype_is_applied_and_checked(tiny_llama_dir: Path) -> None:
    loaded = load_backbone(str(tiny_llama_dir), dtype="bfloat16")
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
    with pytest.raises(ValueError, match="dtype must be one of"):
        load_backbone(str(tiny_llama_dir), dtype="fp8")


def test_folder_with_only_pickle_weights_is_refused(tiny_llama_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "bin-only"
    folder.mkdir()
    shutil.copy(tiny_llama_dir / "config.json", folder / "config.json")
    (folder / "pytorch_model.bin").write_bytes(b"never unpickled")
    with pytest.raises(ValueError, match=r"only pickle weights \(pytorch_model\.bin\).*safetensors"):
        load_backbone(str(folder))


def test_missing_hub_id_gives_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants as hub_constants

    # Offline mode makes the hub attempt fail at once instead of retrying DNS for ~20 s.
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    with pytest.raises(FileNotFoundError, match=r"'no-such-org/no-such-model'.*not in the local Hugging Face cache"):
        load_backbone("no-such-org/no-such-model")


def test_hub_id_is_found_in_local_hf_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_llama_dir: Path
) -> None:
    import huggingface_hub.constants as hub_constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf-cache" / "models--smorm-test--tiny-llama"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(tiny_llama_dir, repo / "snapshots" / commit)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    loaded = load_backbone("smorm-test/tiny-llama")
    assert loaded.local_path == str((repo / "snapshots" / commit).resolve())
    assert loaded.hidden_size == 32


def test_missing_paths_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="backbone folder not found: './no-such-folder'"):
        resolve_backbone("./no-such-folder")
    with pytest.raises(FileNotFoundError, match="GGUF file not found"):
        resolve_backbone(str(tmp_path / "absent.gguf"))
    no_config = tmp_path / "empty-folder"
    no_config.mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        resolve_backbone(str(no_config))


# --------------------------------------------------------------------------------------------
# Tokenizer defaults and decoder detection
# --------------------------------------------------------------------------------------------


def test_pad_token_falls_back_to_eos() -> None:
    from smorm.testing import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    tokenizer.pad_token = None
    ensure_pad_token(tokenizer)
    assert tokenizer.pad_token == "<|im_end|>"
    assert tokenizer.pad_token_id == tokenizer.eos_token_id


def test_plain_chat_template_for_a_decoder_without_one() -> None:
    from smorm.testing import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = None
    ensure_chat_template(tokenizer)
    assert tokenizer.chat_template == PLAIN_CHAT_TEMPLATE
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
    ]
    text = tokenizer.apply_chat_template(conversation, tokenize=False)
    assert text == "<|im_start|>System: Be brief.\nUser: Hi\nAssistant: Hello<|im_end|>"
    prompt = tokenizer.apply_chat_template(conversation[1:2], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>User: Hi\nAssistant:"


def test_decoder_detection_from_config() -> None:
    from transformers import BertConfig, LlamaConfig, RobertaConfig, T5Config

    assert is_decoder_config(LlamaConfig()) is True
    assert is_decoder_config(LlamaConfig(architectures=["LlamaForSequenceClassification"])) is True
    assert is_decoder_config(BertConfig(architectures=["BertModel"])) is False
    assert is_decoder_config(RobertaConfig()) is False
    assert is_decoder_config(BertConfig(architectures=["BertLMHeadModel"], is_decoder=True)) is True
    with pytest.raises(NotImplementedError, match="encoder-decoder"):
        is_decoder_config(T5Config())


# --------------------------------------------------------------------------------------------
# GGUF cache mechanics, with a stand-in converter (the real one is tested on SmolLM2 below)
# --------------------------------------------------------------------------------------------


class _CopyConverter:
    """Stands in for ``convert_gguf``: copies a tiny Llama folder and counts calls."""

    def __init__(self, source: Path, fail: bool = False) -> None:
        self.source, self.fail, self.calls = source, fail, 0

    def __call__(self, gguf_path: Path, out_dir: Path) -> Path:
        self.calls += 1
        if self.fail:
            raise RuntimeError("conversion failed half way")
        for item in self.source.iterdir():
            shutil.copy(item, out_dir / item.name)
        return out_dir


def test_gguf_path_cache_is_reused_then_replaced_when_stale(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_llama_dir: Path
) -> None:
    fake_gguf = tmp_path / "model.gguf"
    fake_gguf.write_bytes(b"GGUF stand-in")
    converter = _CopyConverter(tiny_llama_dir)
    monkeypatch.setattr(backbone_module, "convert_gguf", converter)
    cache = tmp_path / "cache"

    first = resolve_backbone(str(fake_gguf), cache_dir=cache)
    second = resolve_backbone(str(fake_gguf), cache_dir=cache)
    assert first == second and converter.calls == 1
    assert Path(first).name.startswith("model-") and Path(first).parent == cache.resolve()
    marker = json.loads((Path(first) / CONVERSION_MARKER).read_text())
    assert marker["source"] == str(fake_gguf.resolve()) and marker["size"] == len(b"GGUF stand-in")

    # The same bytes elsewhere (the package in another virtual environment) or touched: the same entry.
    twin = tmp_path / "other-venv" / "model.gguf"
    twin.parent.mkdir()
    twin.write_bytes(fake_gguf.read_bytes())
    os.utime(twin, ns=(1_000_000_000, 1_000_000_000))
    assert resolve_backbone(str(twin), cache_dir=cache) == first and converter.calls == 1
    # A changed file is a new cache entry for a path ref, and a replaced entry for a fixed target.
    fake_gguf.write_bytes(b"GGUF stand-in, v2")
    assert resolve_backbone(str(fake_gguf), cache_dir=cache) != first
    assert converter.calls == 2
    target = cache / "fixed-name"
    ensure_converted_gguf(fake_gguf, target)
    ensure_converted_gguf(twin, target)  # other bytes: replaced
    assert converter.calls == 4
    assert json.loads((target / CONVERSION_MARKER).read_text())["sha256"] == hashlib.sha256(
        b"GGUF stand-in").hexdigest()
    ensure_converted_gguf(twin, target)
    assert converter.calls == 4
    assert not [p.name for p in cache.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_failed_conversion_leaves_no_cache_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_llama_dir: Path
) -> None:
    fake_gguf = tmp_path / "broken.gguf"
    fake_gguf.write_bytes(b"GGUF stand-in")
    monkeypatch.setattr(backbone_module, "convert_gguf", _CopyConverter(tiny_llama_dir, fail=True))
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="half way"):
        resolve_backbone(str(fake_gguf), cache_dir=cache)
    assert list(cache.iterdir()) == []


# --------------------------------------------------------------------------------------------
# Embedded MiniLM (encoder)
# --------------------------------------------------------------------------------------------


def _mean_pooled(model: torch.nn.Module, tokenizer, sentence: str) -> torch.Tensor:
    """all-MiniLM-L6-v2's sentence embedding: masked mean of token states, L2-normalised. [hidden]"""
    batch = tokenizer(sentence, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state[0]  # [seq, hidden]
    mean = hidden.mean(dim=0)
    return mean / mean.norm()


def test_minilm_loads_as_encoder_with_meaningful_embeddings() -> None:
    loaded = load_backbone("minilm-l6")
    assert loaded.is_decoder is False
    assert loaded.hidden_size == 384 and loaded.model.config.num_hidden_layers == 6
    assert loaded.tokenizer.pad_token == "[PAD]"
    food = _mean_pooled(loaded.model, loaded.tokenizer, "A man is eating food.")
    meal = _mean_pooled(loaded.model, loaded.tokenizer, "A man is eating a meal.")
    market = _mean_pooled(loaded.model, loaded.tokenizer, "The stock market fell sharply today.")
    assert food.shape == (384,) and torch.isfinite(food).all()
    # Real sentence-transformer weights (not random ones) put paraphrases close together.
    assert float(food @ meal) > 0.7 > float(food @ market)

    conversation = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}]
    text = loaded.tokenizer.apply_chat_template(conversation, tokenize=False)
    assert text == "[CLS]User: Hi there\nAssistant: Hello![SEP]"
    with pytest.raises(ValueError, match="needs a decoder"):
        load_backbone("minilm-l6", with_lm_head=True)


# --------------------------------------------------------------------------------------------
# Embedded SmolLM2 (GGUF -> safetensors), one conversion per session
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_converted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    cache = tmp_path_factory.mktemp("backbone-cache")
    started = time.perf_counter()
    local_path = resolve_backbone(SMOL, cache_dir=cache)
    seconds = time.perf_counter() - started
    print(f"\nSmolLM2 GGUF conversion: {seconds:.1f}s")
    return {"cache": cache, "path": Path(local_path), "seconds": seconds}


@pytest.fixture(scope="module")
def smollm2_from_gguf() -> torch.nn.Module:
    """The reference: SmolLM2 loaded straight from the GGUF by transformers (dequantized)."""
    from transformers import AutoModelForCausalLM

    gguf = embedded_backbone_path(SMOL)
    return AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)


@pytest.mark.slow
def test_smollm2_converts_once_and_reuses_cache(
    smollm2_converted: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, cache = smollm2_converted["path"], smollm2_converted["cache"]
    assert folder == (cache / SMOL).resolve()
    weights_mtime = (folder / "model.safetensors").stat().st_mtime_ns

    def no_second_conversion(*args: object) -> None:
        raise AssertionError("the cached conversion should have been reused")

    monkeypatch.setattr(backbone_module, "convert_gguf", no_second_conversion)
    started = time.perf_counter()
    loaded = load_backbone(SMOL, cache_dir=str(cache))
    print(f"\nSmolLM2 load from cache: {time.perf_counter() - started:.2f}s")
    assert loaded.local_path == str(folder)
    assert (folder / "model.safetensors").stat().st_mtime_ns == weights_mtime
    assert loaded.is_decoder is True and loaded.hidden_size == 576
    assert loaded.model.config.num_hidden_layers == 30 and loaded.model.config.model_type == "llama"

    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    assert getattr(loaded.model, "hf_quantizer", None) is None
    assert {"config.json", "model.safetensors", "tokenizer.json", CONVERSION_MARKER} <= {
        p.name for p in folder.iterdir()
    }
    assert not list(folder.glob("*.bin"))
    assert [p.name for p in cache.iterdir()] == [SMOL]  # staging folder renamed away


@pytest.mark.slow
def test_smollm2_converted_weights_equal_gguf_weights(
    smollm2_converted: dict, smollm2_from_gguf: torch.nn.Module
) -> None:
    from transformers import AutoModelForCausalLM

    assert smollm2_from_gguf.hf_quantizer is not None  # why the conversion exists
    converted = AutoModelForCausalLM.from_pretrained(smollm2_converted["path"], use_safetensors=True)
    reference_state = smollm2_from_gguf.state_dict()
    converted_state = converted.state_dict()
    assert converted_state.keys() == reference_state.keys()
    for name, tensor in reference_state.items():
        assert converted_state[name].dtype == tensor.dtype == torch.float32, name
        assert torch.equal(converted_state[name], tensor), name


@pytest.mark.slow
def test_smollm2_hidden_states_match_gguf(smollm2_converted: dict, smollm2_from_gguf: torch.nn.Module) -> None:
    loaded = load_backbone(SMOL, cache_dir=str(smollm2_converted["cache"]))
    batch = loaded.tokenizer("The quick brown fox jumps over the lazy dog.", return_tensors="pt")
    with torch.no_grad():
        converted_hidden = loaded.model(**batch).last_hidden_state
        reference_hidden = smollm2_from_gguf.model(**batch).last_hidden_state
    assert converted_hidden.shape == (1, batch["input_ids"].shape[1], 576)
    assert torch.allclose(converted_hidden, reference_hidden, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_smollm2_tokenizer_has_chat_template(smollm2_converted: dict) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_converted["path"])
    conversation = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    expected = (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n"
    )
    assert tokenizer.apply_chat_template(conversation, tokenize=False) == expected
    assert tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]) == [1, 2]
    assert tokenizer.pad_token == "<|im_end|>" and len(tokenizer) == 49152
    text = "Reward models score responses."
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
