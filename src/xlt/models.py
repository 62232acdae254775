"""Loading models, tokenizers and adapters, and the architecture facts methods need.

Safety: weights load from safetensors. Pickle-based files (``pytorch_model.bin``, ``*.pt``,
``adapter_model.bin``) can execute code when loaded and are refused unless the caller passes
``allow_pickle=True``; ``trust_remote_code`` (code shipped with a model) is likewise off unless
asked for. A hub id is resolved by transformers as usual (offline: from the local cache).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from xlt.errors import ModelError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

DTYPES = {"auto": "auto", "float32": "float32", "fp32": "float32", "float16": "float16",
          "fp16": "float16", "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}

#: Linear-layer names adapted by LoRA by default, per architecture family (attention and MLP).
#: PEFT has no defaults for XGLM / M2M100 / NLLB, and only q,v for Llama-like models; the
#: methods here adapt attention and MLP projections, as their papers do.
DEFAULT_TARGET_MODULES: dict[str, list[str]] = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen3": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gemma2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "bloom": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "xglm": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
    "m2m_100": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
    "nllb_moe": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
}


def parse_dtype(name: str | None):
    """``"auto"`` / ``"float32"`` / ``"bf16"`` ... -> a torch dtype or ``"auto"``."""
    import torch

    if name is None:
        return "auto"
    key = str(name).lower().replace("torch.", "")
    if key not in DTYPES:
        raise ModelError(f"unknown dtype {name!r} (expected one of {', '.join(sorted(set(DTYPES)))})")
    value = DTYPES[key]
    return value if value == "auto" else getattr(torch, value)


def resolve_device(device: str | None) -> str:
    """``"auto"`` -> ``"cuda"`` when available, else ``"cpu"``; other values are checked."""
    import torch

    device = device or "auto"
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} requested but CUDA is not available on this machine")
    if not re.match(r"^(cpu|cuda(:\d+)?|mps)$", device):
        raise ModelError(f"unknown device {device!r} (expected auto, cpu, cuda, cuda:N or mps)")
    return device


def local_model_dir(name_or_path: str | os.PathLike) -> Path | None:
    """The local directory ``name_or_path`` names, None for a hub id; a missing path or a file
    where a directory is expected is a :class:`ModelError`."""
    path = Path(name_or_path)
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"{path}: expected a model directory, got a file")
        return path
    text = os.fspath(name_or_path)
    if text.startswith((".", "/", "~")) or os.sep in text.strip("/") and text.count("/") > 1:
        raise ModelError(f"{text}: no such model directory")
    return None


def recorded_base(name_or_path: str | os.PathLike) -> str:
    """How an adapter records its base model: a local directory as an absolute path (so the
    adapter loads from any working directory, with PEFT's own ``AutoPeftModel`` too), a hub id
    unchanged. A name that is both a local directory and a hub id is the directory, as
    transformers resolves it."""
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        return str(path.resolve())
    return text


def adapter_base(directory: Path) -> str | None:
    """The base model named by the PEFT adapter in ``directory`` (``base_model_name_or_path`` of
    its ``adapter_config.json``, the ``AutoPeftModel`` convention), or None when ``directory``
    is a model directory (it has a ``config.json``) or not an adapter directory at all."""
    from xlt.io import read_json

    config_path = directory / "adapter_config.json"
    if (directory / "config.json").is_file() or not config_path.is_file():
        return None
    config = read_json(config_path, error=ModelError)
    base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    if not base:
        raise ModelError(f"{config_path}: the adapter names no base model (base_model_name_or_path); "
                         "pass the base as --model and this directory as --adapter")
    return str(base)


def refuse_adapter_model(name_or_path: str | os.PathLike, prog: str) -> None:
    """Training starts from a plain model: ``--model`` naming an adapter directory is refused in
    one line (a new adapter would record the adapter's base and silently drop the adapter)."""
    local = local_model_dir(name_or_path)
    base = adapter_base(local) if local is not None else None
    if base is not None:
        raise ModelError(f"{prog}: --model {name_or_path} is a PEFT adapter (of {base}); training starts "
                         "from a plain model: pass its base, or fold the adapter into it first "
                         "(xlt merge ... --merge-into-base)")


def check_weight_files(directory: Path, *, allow_pickle: bool, what: str = "model") -> None:
    """Refuse a directory whose weights exist only as pickle files, unless allowed."""
    names = [p.name for p in directory.iterdir() if p.is_file()]
    safetensors = [n for n in names if n.endswith(".safetensors")]
    pickles = [n for n in names if n.endswith(PICKLE_SUFFIXES) and n not in ("training_args.bin",)]
    if pickles and not safetensors and not allow_pickle:
        raise ModelError(
            f"{directory}: {what} weights are only in pickle format ({', '.join(sorted(pickles))}), "
            "which can run arbitrary code when loaded; convert them to safetensors or pass "
            "--allow-pickle if you trust the file")


def load_tokenizer(name_or_path: str | os.PathLike, *, padding_side: str | None = None,
                   trust_remote_code: bool = False, **kwargs: Any):
    """Load a tokenizer and make sure it has a pad token (falls back to EOS, then UNK)."""
    from transformers import AutoTokenizer

    from xlt.quiet import quiet_transformers

    quiet_transformers()

    local = local_model_dir(name_or_path)
    if local is not None and not any((local / name).is_file() for name in TOKENIZER_FILES):
        base = adapter_base(local)
        if base is not None:  # an adapter saved without its tokenizer: the base model's
            name_or_path = base
            local_model_dir(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(os.fspath(name_or_path),
                                                  trust_remote_code=trust_remote_code, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{name_or_path}: cannot load tokenizer ({_first_line(exc)})") from None
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise ModelError(f"{name_or_path}: tokenizer has no pad, eos or unk token to pad with")
        tokenizer.pad_token = fallback
    if padding_side is not None:
        tokenizer.padding_side = padding_side
    return tokenizer


def model_kind(config) -> str:
    """``"seq2seq"`` for encoder-decoder configs, else ``"causal"``."""
    return "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"


def load_model(name_or_path: str | os.PathLike, *, kind: str = "auto", dtype: str | None = "auto",
               device: str | None = "cpu", adapter: str | os.PathLike | None = None,
               allow_pickle: bool = False, trust_remote_code: bool = False,
               attn_implementation: str | None = None, is_trainable: bool = False, **kwargs: Any):
    """Load a causal LM or seq2seq model from a local path or hub id.

    ``kind``: ``"causal"``, ``"seq2seq"`` or ``"auto"`` (read from the config). ``adapter``: a
    PEFT adapter directory loaded on top (returned as a ``PeftModel``). Pickle weights and
    remote code are refused unless explicitly allowed.

    ``name_or_path`` may itself be a PEFT adapter directory (an ``adapter_config.json`` and no
    ``config.json``): its base is loaded from ``base_model_name_or_path`` (a relative path
    resolves from the working directory, as in PEFT) and the adapter applied on top, as with
    ``adapter``. A local model is loaded by its absolute path, so adapters trained on it
    record a base that loads from any working directory.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from xlt.quiet import quiet_transformers

    quiet_transformers()

    local = local_model_dir(name_or_path)
    base = adapter_base(local) if local is not None else None
    if base is not None:
        if adapter is not None:
            raise ModelError(f"{local}: is a PEFT adapter (of {base}); to stack --adapter {adapter} "
                             f"on it, merge them first, or pass its base as the model")
        options = dict(kind=kind, dtype=dtype, device=device, allow_pickle=allow_pickle,
                       trust_remote_code=trust_remote_code, attn_implementation=attn_implementation)
        try:
            model = load_model(base, **options, **kwargs)
        except ModelError as exc:
            raise ModelError(f"{local}: the adapter's base model {base!r} (base_model_name_or_path in "
                             f"adapter_config.json) does not load: {exc}") from None
        return load_adapter(model, local, allow_pickle=allow_pickle, is_trainable=is_trainable)
    if local is not None:
        if not (local / "config.json").is_file():
            raise ModelError(f"{local}: not a model directory (no config.json)")
        check_weight_files(local, allow_pickle=allow_pickle)
    source = str(local.resolve()) if local is not None else os.fspath(name_or_path)
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except ValueError as exc:
        message = _first_line(exc)
        if "trust_remote_code" in message:
            raise ModelError(f"{name_or_path}: the model needs its own code to load; pass "
                             "--trust-remote-code only if you trust its author") from None
        raise ModelError(f"{name_or_path}: cannot read config ({message})") from None
    except OSError as exc:
        raise ModelError(f"{name_or_path}: cannot load ({_first_line(exc)})") from None
    if kind == "auto":
        kind = model_kind(config)
    if kind not in ("causal", "seq2seq"):
        raise ModelError(f"unknown model kind {kind!r} (expected causal, seq2seq or auto)")
    auto = AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModelForCausalLM
    load_kwargs = dict(dtype=parse_dtype(dtype), trust_remote_code=trust_remote_code,
                       use_safetensors=None if allow_pickle else True, **kwargs)
    if attn_implementation:
        load_kwargs["attn_implementation"] = attn_implementation
    try:
        model = auto.from_pretrained(source, **load_kwargs)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{name_or_path}: cannot load {kind} model ({_first_line(exc)})") from None
    set_loss_type(model, kind)
    model.to(resolve_device(device))
    if adapter is not None:
        model = load_adapter(model, adapter, allow_pickle=allow_pickle, is_trainable=is_trainable)
    return model


def set_loss_type(model, kind: str = "causal") -> None:
    """Name the loss of a model whose class name does not (GPT-2's ``GPT2LMHeadModel``): the
    same loss transformers falls back to, without its warning on every first forward."""
    if getattr(model, "loss_type", "") is None:
        model.loss_type = "ForConditionalGeneration" if kind == "seq2seq" else "ForCausalLM"


def load_adapter(model, adapter_dir: str | os.PathLike, *, adapter_name: str = "default",
                 allow_pickle: bool = False, is_trainable: bool = False):
    """Load a PEFT adapter directory onto ``model`` (safetensors unless ``allow_pickle``)."""
    from peft import PeftModel

    path = Path(adapter_dir)
    if not path.is_dir():
        raise ModelError(f"{path}: no such adapter directory")
    if not (path / "adapter_config.json").is_file():
        raise ModelError(f"{path}: not a PEFT adapter directory (no adapter_config.json)")
    if not (path / "adapter_model.safetensors").is_file():
        if (path / "adapter_model.bin").is_file() and not allow_pickle:
            raise ModelError(f"{path}: adapter weights are only in pickle format (adapter_model.bin), "
                             "which can run arbitrary code when loaded; pass --allow-pickle if you "
                             "trust the file")
        if not (path / "adapter_model.bin").is_file():
            raise ModelError(f"{path}: no adapter weights (adapter_model.safetensors)")
    try:
        return PeftModel.from_pretrained(model, os.fspath(path), adapter_name=adapter_name,
                                         is_trainable=is_trainable)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelError(f"{path}: cannot load adapter ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------------------------
# Architecture facts


def unwrap_model(model):
    """The underlying ``PreTrainedModel`` of a PEFT, DDP or compiled wrapper."""
    seen = 0
    while seen < 8:
        seen += 1
        if hasattr(model, "module") and not hasattr(model, "config"):  # DDP / DeepSpeed
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        elif hasattr(model, "get_base_model") and callable(model.get_base_model):  # PEFT
            model = model.get_base_model()
        else:
            break
    return model


def decoder_blocks(model):
    """The ``nn.ModuleList`` of transformer blocks of a causal LM (the decoder of a seq2seq).

    Covers the Llama family (``model.layers``), GPT-2 / BLOOM (``transformer.h``), XGLM, OPT,
    GPT-NeoX and encoder-decoder models (``get_decoder().layers``).
    """
    import torch.nn as nn

    base = unwrap_model(model)
    candidates = []
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    if decoder is not None:
        candidates += [getattr(decoder, "layers", None), getattr(decoder, "h", None),
                       getattr(getattr(decoder, "decoder", None), "layers", None)]
    inner = getattr(base, "model", None) or getattr(base, "transformer", None) or getattr(base, "gpt_neox", None)
    if inner is not None:
        candidates += [getattr(inner, "layers", None), getattr(inner, "h", None),
                       getattr(getattr(inner, "decoder", None), "layers", None)]
    for blocks in candidates:
        if isinstance(blocks, nn.ModuleList) and len(blocks) > 0:
            return blocks
    raise ModelError(f"cannot find the transformer blocks of {type(base).__name__}")


def encoder_blocks(model):
    """The encoder's ``nn.ModuleList`` of an encoder-decoder model."""
    base = unwrap_model(model)
    encoder = base.get_encoder() if hasattr(base, "get_encoder") else None
    blocks = getattr(encoder, "layers", None)
    if blocks is None or not getattr(base.config, "is_encoder_decoder", False):
        raise ModelError(f"{type(base).__name__} has no encoder")
    return blocks


def num_layers(model) -> int:
    """Number of decoder blocks."""
    return len(decoder_blocks(model))


def default_target_modules(model) -> list[str]:
    """LoRA target module names for ``model``'s architecture.

    Known families use :data:`DEFAULT_TARGET_MODULES`; otherwise every distinct leaf name of a
    linear layer inside the blocks (the LM head and embeddings excluded).
    """
    import torch.nn as nn
    from transformers.pytorch_utils import Conv1D

    base = unwrap_model(model)
    model_type = getattr(base.config, "model_type", "")
    present = {name.rsplit(".", 1)[-1] for name, module in base.named_modules()
               if isinstance(module, (nn.Linear, Conv1D))}
    if model_type in DEFAULT_TARGET_MODULES:
        targets = [t for t in DEFAULT_TARGET_MODULES[model_type] if t in present]
        if targets:
            return targets
    blocks = decoder_blocks(base)
    names: dict[str, None] = {}
    for name, module in blocks.named_modules():
        if isinstance(module, (nn.Linear, Conv1D)):
            names.setdefault(name.rsplit(".", 1)[-1], None)
    if not names:
        raise ModelError(f"no linear layers found in {type(base).__name__}; pass --target-modules")
    return list(names)


def check_target_modules(model, target_modules: list[str]) -> None:
    """Raise if any of ``target_modules`` matches no module of ``model``."""
    base = unwrap_model(model)
    leaves = {name.rsplit(".", 1)[-1] for name, _ in base.named_modules()}
    missing = [t for t in target_modules if t not in leaves]
    if missing:
        raise ModelError(f"target module(s) {', '.join(missing)} not found in "
                         f"{type(base).__name__} (available: {', '.join(sorted(default_target_modules(base)))})")


def targets_are_conv1d(model, target_modules: list[str]) -> bool:
    """Whether the ``target_modules`` of ``model`` are GPT-2 style ``Conv1D`` layers (weights
    stored (in, out)), for which LoRA needs ``fan_in_fan_out=True``."""
    from transformers.pytorch_utils import Conv1D

    base = unwrap_model(model)
    wanted = set(target_modules)
    return any(isinstance(module, Conv1D) for name, module in base.named_modules()
               if name.rsplit(".", 1)[-1] in wanted)
