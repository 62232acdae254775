"""The logit lens at every layer: which language a causal LM "thinks in" (Wendler et al., 2024).

Wendler et al. ("Do Llamas Work in English? On the Latent Language of Multilingual
Transformers", ACL 2024) decode each block's output ``h_l`` with the model's own final norm and
unembedding, ``softmax(U · norm(h_l))``, at the position that predicts the next word, and track
per layer the probability of the correct next word in the target language, of its translation in
a pivot language (English), and the entropy of the distribution.

Here, per prompt and layer ``l = 1..N`` (the output of block ``l - 1``; layer N is the model's own
output distribution):

* ``p_target`` — probability of the first token of the expected next word;
* ``p_pivot`` — probability of the first token of its pivot-language translation;
* ``entropy`` — ``-sum_v p_v ln p_v`` of the lens distribution, in nats.

One forward pass per batch: forward hooks keep each block's output at the last real position
of every row only (right padding; the causal mask keeps the pads after it from mattering), then
norm and head run once on the stacked ``(N, batch, dim)`` states.

**Tuned lens** (Belrose et al., "Eliciting Latent Predictions from Transformers with the Tuned
Lens", 2023): one affine translator ``(A_l, b_l)`` per layer, added residually before the final
norm and head, ``softmax(U · norm(h_l + A_l h_l + b_l))``, as the ``tuned-lens`` package applies
it. Its files (:func:`load_tuned_lens`): a directory with ``config.json`` and ``params.pt`` (or
``params.safetensors``) holding ``{i}.weight`` ``(dim, dim)`` and ``{i}.bias`` ``(dim,)`` (older
releases: ``layer_translators.{i}.weight``), ``i = 0..N-1``. Translator ``i`` reads hidden state
``i`` of ``output_hidden_states`` (0: the embeddings; ``i``: the output of block ``i - 1``), so
layer ``l = 1..N-1`` here uses translator ``l``; translator 0 (the embeddings, not a layer here) is
read and checked but unused, and layer N has none: it stays the model's own output.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from xlt.errors import ConfigError, DataError, ModelError

TUNED_LENS_WEIGHTS = ("params.safetensors", "params.pt")

METRICS = ("p_target", "p_pivot", "entropy")
FINAL_NORM_NAMES = ("norm", "ln_f", "final_layernorm", "final_layer_norm", "layer_norm")


@dataclass(frozen=True)
class LensProbe:
    """One prompt, the expected next word ``target`` and its pivot-language translation ``pivot``."""

    prompt: str
    target: str
    pivot: str


def final_norm_and_head(model):
    """``(final_norm, head, softcap)`` of a causal LM: the modules the model applies after its last
    block, and Gemma-2 style final logit soft-capping (None when the model has none)."""
    from xlt.models import decoder_blocks, unwrap_model

    base = unwrap_model(model)
    if getattr(base.config, "is_encoder_decoder", False):
        raise ModelError(f"{type(base).__name__} is an encoder-decoder model; the lens reads the blocks of a "
                         "decoder-only causal LM")
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if head is None:
        raise ModelError(f"{type(base).__name__} has no output head (get_output_embeddings)")
    blocks = decoder_blocks(base)
    for inner_name in ("model", "transformer", "gpt_neox"):
        inner = getattr(base, inner_name, None)
        if inner is not None and not hasattr(inner, "layers") and not hasattr(inner, "h") \
                and hasattr(inner, "decoder"):
            inner = inner.decoder  # OPT-style: model.decoder.final_layer_norm
        for name in FINAL_NORM_NAMES:
            norm = getattr(inner, name, None) if inner is not None else None
            if norm is not None and norm is not blocks and callable(norm):
                return norm, head, getattr(base.config, "final_logit_softcapping", None)
    raise ModelError(f"cannot find the final norm of {type(base).__name__} (looked for "
                     f"{', '.join(FINAL_NORM_NAMES)})")


@dataclass(frozen=True)
class TunedLens:
    """Affine translators of a tuned lens, one per hidden state ``0..N-1`` (see the module doc).

    ``weight``: ``(N, dim, dim)``, ``bias``: ``(N, dim)``; the lens of layer ``l`` decodes
    ``h + h @ weight[l].T + bias[l]``. ``source`` names the files they came from.
    """

    weight: Any
    bias: Any
    source: str

    @property
    def num_layers(self) -> int:
        return int(self.weight.shape[0])

    def to(self, device=None, dtype=None) -> "TunedLens":
        """The same lens with its tensors on ``device`` in ``dtype`` (moved once, not per batch)."""
        return TunedLens(self.weight.to(device=device, dtype=dtype), self.bias.to(device=device, dtype=dtype),
                         self.source)

    def translate(self, states):
        """``states``: ``(N, batch, dim)``, row ``l - 1`` for layer ``l``. Rows ``0..N-2`` (layers
        ``1..N-1``) get translators ``1..N-1`` added residually; the last row is left as it is."""
        import torch

        n = states.shape[0]
        weight = self.weight[1:n].to(device=states.device, dtype=states.dtype)  # (N-1, dim, dim)
        bias = self.bias[1:n].to(device=states.device, dtype=states.dtype)      # (N-1, dim)
        inner = states[:-1]
        translated = inner + torch.baddbmm(bias[:, None, :], inner, weight.transpose(1, 2))
        return torch.cat([translated, states[-1:]])


def _model_width(model) -> int:
    from xlt.models import unwrap_model

    base = unwrap_model(model)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    width = getattr(head, "in_features", None) or getattr(base.config, "hidden_size", None)
    if width is None:
        raise ModelError(f"cannot tell the hidden width of {type(base).__name__}")
    return int(width)


def load_tuned_lens(path, model, *, allow_pickle: bool = False) -> TunedLens:
    """A tuned lens from ``path`` (a directory in the ``tuned-lens`` layout, or its weights file),
    checked against ``model``: one translator per decoder block, each ``(dim, dim)`` + ``(dim,)``
    with ``dim`` the model's hidden width.

    ``params.safetensors`` is preferred. ``params.pt`` is a pickle: it is read only with
    ``allow_pickle`` (``--allow-pickle``), and then only as plain tensors
    (``torch.load(weights_only=True)``). A bad file, a missing translator or a size that does not
    match the model is a :class:`DataError` naming the file and the field.
    """
    import json
    import os
    from pathlib import Path

    import torch

    from xlt.models import num_layers

    final_norm_and_head(model)  # refuses a model the lens cannot read
    path = Path(path)
    if path.is_dir():
        weights = next((path / name for name in TUNED_LENS_WEIGHTS if (path / name).is_file()), None)
        if weights is None:
            raise DataError(f"not a tuned lens: no {' or '.join(TUNED_LENS_WEIGHTS)}", path=path)
        config_path = path / "config.json"
    elif path.is_file():
        weights, config_path = path, path.parent / "config.json"
    else:
        raise DataError("no such tuned lens (a directory with config.json and params.pt)", path=path)
    n_layers, width = num_layers(model), _model_width(model)

    config: dict = {}
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataError(f"not valid JSON ({exc})", path=config_path) from None
        if not isinstance(config, dict):
            raise DataError("expected a JSON object", path=config_path)
        lens_type = config.get("lens_type", "linear_tuned_lens")
        if lens_type != "linear_tuned_lens":
            raise DataError(f"{lens_type!r} is not supported (only linear_tuned_lens)", path=config_path,
                            field="lens_type")
        for key, want in (("d_model", width), ("num_hidden_layers", n_layers)):
            if key in config and config[key] != want:
                what = "hidden width" if key == "d_model" else "number of layers"
                raise DataError(f"{config[key]!r} does not match the model's {what} {want}", path=config_path,
                                field=key)

    if weights.name.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(os.fspath(weights))
        except (SafetensorError, OSError, ValueError) as exc:
            raise DataError(f"not a readable safetensors file ({exc})", path=weights) from None
    else:
        if not allow_pickle:
            raise DataError("a pickle file, which can run arbitrary code when loaded; convert it to "
                            "params.safetensors or pass --allow-pickle if you trust it (read as plain tensors "
                            "only)", path=weights)
        from xlt.io import load_plain_tensors

        try:
            tensors = load_plain_tensors(weights)
        except ValueError as exc:
            raise DataError(f"cannot load as plain tensors ({exc})", path=weights) from None
        if not isinstance(tensors, dict):
            raise DataError(f"expected a dict of tensors, got {type(tensors).__name__}", path=weights)

    found: dict[int, dict[str, Any]] = {}
    prefix = ""
    for key, value in tensors.items():
        match = re.fullmatch(r"(layer_translators\.)?(\d+)\.(weight|bias)", str(key))
        if match is None:
            continue  # older releases saved the whole lens (its unembedding too): only translators are read
        prefix = match.group(1) or ""
        found.setdefault(int(match.group(2)), {})[match.group(3)] = value
    if not found:
        raise DataError("no translator tensors ({i}.weight / {i}.bias)", path=weights)
    count = max(found) + 1
    if count != n_layers:  # the field named: the first translator too many, or the last one missing
        field_name = f"{prefix}{n_layers if count > n_layers else n_layers - 1}.weight"
        raise DataError(f"{'present' if count > n_layers else 'missing'}: {count} translators (0..{count - 1}) "
                        f"for a model of {n_layers} layers (one translator per layer)", path=weights,
                        field=field_name)
    with_bias = config.get("bias", True) is not False
    weight_rows, bias_rows = [], []
    for i in range(n_layers):
        parts = found.get(i, {})
        for name, shape in (("weight", (width, width)), ("bias", (width,))):
            field_name = f"{prefix}{i}.{name}"
            value = parts.get(name)
            if value is None:
                if name == "bias" and not with_bias:
                    continue
                raise DataError(f"missing: no translator for layer {i}", path=weights, field=field_name)
            if not isinstance(value, torch.Tensor) or not value.is_floating_point():
                raise DataError("not a floating-point tensor", path=weights, field=field_name)
            if tuple(value.shape) != shape:
                raise DataError(f"shape {tuple(value.shape)} does not match the model's hidden width {width} "
                                f"(expected {shape})", path=weights, field=field_name)
            if not bool(torch.isfinite(value).all()):
                raise DataError("holds NaN or infinite values", path=weights, field=field_name)
        weight_rows.append(parts["weight"].float())
        bias_rows.append(parts["bias"].float() if "bias" in parts else torch.zeros(width))
    return TunedLens(torch.stack(weight_rows), torch.stack(bias_rows), str(weights))


def lens_log_probs(model, input_ids, attention_mask=None, *, tuned_lens: TunedLens | None = None):
    """Log-probabilities of the logit lens at the last real position of every row, all layers.

    ``input_ids``, ``attention_mask``: ``(batch, seq)``, right-padded. Returns ``(N, batch,
    vocab)`` float32, row ``l - 1`` for layer ``l`` (output of block ``l - 1``); row ``N - 1`` is
    the model's own next-token distribution. With ``tuned_lens``, layers ``1..N-1`` are decoded
    through its translators (:meth:`TunedLens.translate`).
    """
    import torch

    from xlt.models import decoder_blocks

    norm, head, softcap = final_norm_and_head(model)
    blocks = decoder_blocks(model)
    device = next(model.parameters()).device
    ids = torch.as_tensor(input_ids, dtype=torch.long, device=device)
    mask = torch.ones_like(ids) if attention_mask is None else torch.as_tensor(attention_mask, device=device)
    last = mask.long().sum(dim=1) - 1  # (batch,)
    if bool((last < 0).any()):
        raise DataError("an empty prompt has no position to read the lens at")
    rows = torch.arange(ids.shape[0], device=device)
    captured: list = [None] * len(blocks)

    def make_hook(index: int):
        def hook(module, args, output):
            hidden = output[0] if isinstance(output, (tuple, list)) else output
            captured[index] = hidden[rows, last]  # (batch, dim): only the predicting position is kept
        return hook

    handles = [block.register_forward_hook(make_hook(i)) for i, block in enumerate(blocks)]
    try:
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask, use_cache=False)
            if any(c is None for c in captured):
                raise ModelError(f"could not capture every block's output of {type(model).__name__}")
            states = torch.stack(captured)  # (N, batch, dim)
            if tuned_lens is not None:
                if tuned_lens.num_layers != states.shape[0]:
                    raise ModelError(f"the tuned lens {tuned_lens.source} has {tuned_lens.num_layers} translators, "
                                     f"the model {states.shape[0]} layers")
                states = tuned_lens.translate(states)
            logits = head(norm(states)).float()
            if softcap:
                logits = torch.tanh(logits / softcap) * softcap
    finally:
        for handle in handles:
            handle.remove()
    return torch.log_softmax(logits, dim=-1)


def lens_metrics(log_probs, target_ids, pivot_ids) -> dict:
    """``{"p_target", "p_pivot", "entropy"}``, each ``(N, batch)``, from ``(N, batch, vocab)``
    log-probabilities and one token id per row for the target and the pivot."""
    import torch

    index = torch.arange(log_probs.shape[1], device=log_probs.device)
    target = torch.as_tensor(target_ids, device=log_probs.device)
    pivot = torch.as_tensor(pivot_ids, device=log_probs.device)
    probs = log_probs.exp()
    entropy = -(probs * log_probs).nan_to_num().sum(dim=-1)
    return {"p_target": probs[:, index, target], "p_pivot": probs[:, index, pivot], "entropy": entropy}


def first_token(tokenizer, text: str) -> int:
    """The first token of ``text`` encoded on its own, without special tokens."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise DataError(f"{text!r} encodes to no token")
    return int(ids[0])


@dataclass
class LensResult:
    """Per-prompt values ``(n_prompts, N)`` per metric, and which prompts enter the averages."""

    probes: list[LensProbe]
    target_tokens: list[int]
    pivot_tokens: list[int]
    values: dict[str, list[list[float]]]
    included: list[bool]
    num_layers: int
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict[str, dict[str, list[float]]]:
        """Per metric: ``mean`` and the 95 % band ``low`` / ``high`` (mean ± 1.96 standard errors) per
        layer, over the included prompts."""
        rows = [i for i, keep in enumerate(self.included) if keep]
        n = len(rows)
        out = {}
        for metric in METRICS:
            mean, low, high = [], [], []
            for layer in range(self.num_layers):
                xs = [self.values[metric][i][layer] for i in rows]
                m = sum(xs) / n
                sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
                half = 1.96 * sd / math.sqrt(n)
                mean.append(m)
                low.append(m - half)
                high.append(m + half)
            out[metric] = {"mean": mean, "low": low, "high": high}
        return out

    def to_dict(self) -> dict:
        summary = self.summary()
        return {
            "num_layers": self.num_layers, "layers": list(range(1, self.num_layers + 1)),
            "n_prompts": len(self.probes), "n_averaged": sum(self.included),
            "entropy_unit": "nats",
            **{metric: summary[metric]["mean"] for metric in METRICS},
            "ci95": {metric: {"low": summary[metric]["low"], "high": summary[metric]["high"]} for metric in METRICS},
            "per_prompt": [
                {"prompt": p.prompt, "target": p.target, "pivot": p.pivot, "target_token": t, "pivot_token": v,
                 "averaged": keep, **{metric: self.values[metric][i] for metric in METRICS}}
                for i, (p, t, v, keep) in enumerate(zip(self.probes, self.target_tokens, self.pivot_tokens,
                                                          self.included))],
            **self.extra,
        }


def run_lens(model, tokenizer, probes: Sequence[LensProbe], *, batch_size: int = 16,
             progress: Callable[[int], Any] | None = None, tuned_lens=None,
             allow_pickle: bool = False) -> LensResult:
    """The logit lens over ``probes``, ``batch_size`` prompts per forward pass.

    ``tuned_lens``: a :class:`TunedLens` or a path for :func:`load_tuned_lens` (``allow_pickle``
    applies to its ``params.pt``); the result's ``extra`` records ``lens`` (``"logit"`` or
    ``"tuned"``) and ``tuned_lens`` (its weights file, or None).

    A prompt whose target and pivot share their first token cannot tell the two languages apart;
    it is kept in ``per_prompt`` but left out of the averages (as Wendler et al. drop such words).
    """
    import torch

    from xlt.models import num_layers

    if not probes:
        raise DataError("no prompts to run the lens on")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    final_norm_and_head(model)  # refuses a model the lens cannot read before any work
    if tuned_lens is not None:
        if not isinstance(tuned_lens, TunedLens):
            tuned_lens = load_tuned_lens(tuned_lens, model, allow_pickle=allow_pickle)
        head_weight = final_norm_and_head(model)[1].weight
        tuned_lens = tuned_lens.to(head_weight.device, head_weight.dtype)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    targets = [first_token(tokenizer, p.target) for p in probes]
    pivots = [first_token(tokenizer, p.pivot) for p in probes]
    n_layers = num_layers(model)
    values: dict[str, list[list[float]]] = {metric: [] for metric in METRICS}
    limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    for start in range(0, len(probes), batch_size):
        batch = probes[start:start + batch_size]
        encoded = [tokenizer(p.prompt)["input_ids"] for p in batch]
        for p, ids in zip(batch, encoded):
            if not ids:
                raise DataError(f"prompt {p.prompt!r} encodes to no token")
            if limit and len(ids) > limit:
                raise DataError(f"prompt {p.prompt[:40]!r}... has {len(ids)} tokens, more than the "
                                f"model's {limit} positions")
        width = max(map(len, encoded))
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in encoded])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in encoded])
        log_probs = lens_log_probs(model, ids, mask, tuned_lens=tuned_lens)
        metrics = lens_metrics(log_probs, targets[start:start + len(batch)], pivots[start:start + len(batch)])
        for metric in METRICS:
            values[metric].extend(metrics[metric].T.cpu().double().tolist())
        if progress is not None:
            progress(len(batch))
    included = [t != v for t, v in zip(targets, pivots)]
    if not any(included):
        raise DataError("every prompt's target and pivot start with the same token: the lens cannot "
                        "tell the two languages apart")
    lens = {"lens": "logit" if tuned_lens is None else "tuned",
            "tuned_lens": None if tuned_lens is None else tuned_lens.source}
    return LensResult(list(probes), targets, pivots, values, included, n_layers, extra=lens)


# --------------------------------------------------------------------------------------------
# Probes


def read_probes(path) -> list[LensProbe]:
    """``{"prompt", "target", "pivot"}`` rows (JSON Lines or any format :func:`xlt.formats.iter_rows` reads)."""
    from xlt.formats import iter_rows

    probes = []
    for where, row in iter_rows(path):
        if not isinstance(row, dict):
            raise DataError("expected a JSON object with prompt, target and pivot", path=path, **where)
        for key in ("prompt", "target", "pivot"):
            if not isinstance(row.get(key), str) or not row[key]:
                raise DataError("missing, empty or not a string", path=path, field=key, **where)
        probes.append(LensProbe(row["prompt"], row["target"], row["pivot"]))
    if not probes:
        raise DataError("no prompts", path=path)
    return probes


def probes_from_pairs(pairs: Iterable[Any], *, pivot: str, target_lang: str | None = None,
                      source_lang: str | None = None, shots: int = 4) -> list[LensProbe]:
    """Wendler et al.'s word tasks from parallel pairs that have the pivot language on one side.

    The pairs give a table pivot word -> {language: word}. With ``source_lang``, a translation
    task: ``{shots}`` examples ``src: "w_src" - tgt: "w_tgt"`` then ``src: "query" - tgt: "``;
    without it, the repetition task ``tgt: "w" - tgt: "w"``. The target is the query's word in
    ``target_lang``, the pivot its pivot-language word. Few-shot examples are the next ``shots``
    words of the table (in file order, wrapping around), so the prompts are deterministic.
    """
    table: dict[str, dict[str, str]] = {}
    languages: set[str] = set()
    for pair in pairs:
        sides = {pair.src_lang: pair.src.strip(), pair.tgt_lang: pair.tgt.strip()}
        if pivot not in sides or len(sides) != 2:
            continue
        other = next(lang for lang in sides if lang != pivot)
        languages.add(other)
        table.setdefault(sides[pivot], {})[other] = sides[other]
    if not table:
        raise DataError(f"no pair has the pivot language {pivot!r} on one side")
    if target_lang is None:
        if len(languages) != 1:
            raise ConfigError(f"the pairs pair {pivot} with several languages ({', '.join(sorted(languages))}); "
                              "choose one with --target-lang")
        target_lang = next(iter(languages))
    source = source_lang or target_lang
    for lang in {target_lang, source}:
        if lang not in languages:
            raise ConfigError(f"no pair of {pivot!r} with {lang!r} (languages paired with {pivot}: "
                              f"{', '.join(sorted(languages))})")
    rows = [(pv, words[source], words[target_lang]) for pv, words in table.items()
            if source in words and target_lang in words]
    if len(rows) < shots + 1:
        raise DataError(f"{len(rows)} word(s) in both {source} and {target_lang}, fewer than --shots {shots} + 1")
    probes = []
    for i, (pivot_word, query, answer) in enumerate(rows):
        examples = [rows[(i + k) % len(rows)] for k in range(1, shots + 1)]
        lines = [f'{source}: "{s}" - {target_lang}: "{t}"' for _, s, t in examples]
        lines.append(f'{source}: "{query}" - {target_lang}: "')
        probes.append(LensProbe("\n".join(lines), answer, pivot_word))
    return probes
