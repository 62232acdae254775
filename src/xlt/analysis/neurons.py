"""Language-specific neurons by activation-probability entropy (LAPE; Tang et al., ACL 2024).

Tang et al. ("Language-Specific Neurons: The Key to Multilingual Capabilities in Large Language
Models") call the ``j``-th output of the FFN's activation function in layer ``i`` a neuron. Its
**activation probability** for language ``k`` is the share of the language's tokens on which that
activation is above 0::

    p[k, i, j] = E_{tokens of k} [ 1(act_fn(h W_gate)_j > 0) ]     (gated MLPs: before the up product)
    p[k, i, j] = E_{tokens of k} [ 1(act(h W_fc)_j > 0) ]          (GPT-2 style MLPs)

and its **LAPE** the entropy of the probabilities normalised over the languages::

    q[k] = p[k] / sum_k' p[k'],    LAPE[i, j] = - sum_k q[k] ln q[k]     (nats, 0 ln 0 = 0)

Selection (the paper's, with its released code's percentile and tie conventions): a neuron is a
candidate when its probability for some language exceeds the ``filter_quantile`` percentile of
all probabilities; the ``round(lape_quantile * layers * width)`` candidates with the lowest LAPE are
selected; a selected neuron belongs to language ``k`` when ``p[k]`` exceeds the
``threshold_quantile`` percentile of all probabilities. A percentile here is the nearest-rank one:
the ``round(q * n)``-th smallest of the ``n`` values.

Steering (the paper's intervention): :func:`deactivate_neurons` sets chosen activations to a value
(0 deactivates) with a forward hook on the same activation module, for the duration of a ``with``.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from xlt.errors import ConfigError, DataError, ModelError

#: Names of an MLP's activation-function module (Llama/Qwen/Mistral/Gemma ``act_fn``, GPT-2
#: ``act``, BLOOM ``gelu_impl``, XGLM/OPT ``activation_fn`` on the block itself).
ACTIVATION_NAMES = ("act_fn", "act", "gelu_impl", "activation_fn", "activation")
#: Names of a non-gated MLP's down projection, whose input is the activation (eval mode: no dropout).
DOWN_NAMES = ("down_proj", "c_proj", "fc2", "dense_4h_to_h", "fc_out", "wo")
MLP_NAMES = ("mlp", "feed_forward", "ffn")
GATE_NAMES = ("gate_proj", "w1", "gate_up_proj")


@dataclass(frozen=True)
class ActivationSite:
    """Where one block's FFN activation ``(batch, seq, width)`` can be read and changed: the output
    of ``module`` (``kind="output"``) or its first input (``kind="input"``)."""

    module: Any
    kind: str
    name: str


def activation_sites(model) -> list[ActivationSite]:
    """One :class:`ActivationSite` per decoder block of a causal LM (PEFT wrappers unwrapped).

    The activation module is the block's MLP child named in :data:`ACTIVATION_NAMES` (or the
    block's own, as in XGLM); failing that, for a non-gated MLP only, the input of its down
    projection. A gated MLP without a separate activation module is a :class:`ModelError`: its
    down projection reads ``act(gate) * up``, not the activation.
    """
    import torch.nn as nn

    from xlt.models import decoder_blocks, unwrap_model

    base = unwrap_model(model)
    if getattr(base.config, "is_encoder_decoder", False):
        raise ModelError(f"{type(base).__name__} is an encoder-decoder model; language-specific neurons are read "
                         "from the blocks of a decoder-only causal LM")
    sites = []
    for index, block in enumerate(decoder_blocks(base)):
        mlp = next((getattr(block, n) for n in MLP_NAMES if isinstance(getattr(block, n, None), nn.Module)), block)
        site = None
        for owner, prefix in ((mlp, "mlp." if mlp is not block else ""), (block, "")):
            for name in ACTIVATION_NAMES:
                module = owner._modules.get(name) if hasattr(owner, "_modules") else None
                if isinstance(module, nn.Module):
                    site = ActivationSite(module, "output", f"{prefix}{name}")
                    break
            if site is not None:
                break
        if site is None and not any(getattr(mlp, g, None) is not None for g in GATE_NAMES):
            for name in DOWN_NAMES:
                module = getattr(mlp, name, None)
                if isinstance(module, nn.Module):
                    site = ActivationSite(module, "input", f"{'mlp.' if mlp is not block else ''}{name} (input)")
                    break
        if site is None:
            raise ModelError(f"cannot find the FFN activation of {type(base).__name__} block {index} (looked "
                             f"for a module named {', '.join(ACTIVATION_NAMES)}, or the input of a non-gated "
                             f"MLP's {', '.join(DOWN_NAMES)})")
        sites.append(site)
    return sites


@contextlib.contextmanager
def _hooks(sites: Sequence[ActivationSite], make: Callable[[int], Callable]) -> Iterator[None]:
    """Register ``make(layer)(activation) -> activation or None`` on every site; removed on exit."""
    handles = []

    def output_hook(fn):
        return lambda module, args, output: fn(output)

    def input_hook(fn):
        def hook(module, args):
            changed = fn(args[0])
            return None if changed is None else (changed, *args[1:])
        return hook

    try:
        for layer, site in enumerate(sites):
            fn = make(layer)
            if site.kind == "output":
                handles.append(site.module.register_forward_hook(output_hook(fn)))
            else:
                handles.append(site.module.register_forward_pre_hook(input_hook(fn)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def positive_counts(model, input_ids, attention_mask=None, *, sites=None):
    """Per layer and neuron, on how many real tokens of the batch the activation is > 0.

    ``input_ids``, ``attention_mask``: ``(batch, seq)``; padded positions (mask 0) are not
    counted. Returns ``(counts (layers, width) int64, n_tokens)`` on the model's device. One
    forward pass; only the ``(layers, width)`` counts are kept, never the activations.
    """
    import torch

    sites = sites if sites is not None else activation_sites(model)
    device = next(model.parameters()).device
    ids = torch.as_tensor(input_ids, dtype=torch.long, device=device)
    mask = torch.ones_like(ids) if attention_mask is None else torch.as_tensor(attention_mask, device=device)
    real = mask.reshape(-1).bool()
    counts: list = [None] * len(sites)
    calls = [0] * len(sites)

    def make(layer: int):
        def count(activation):
            if activation.shape[:2] != ids.shape:
                raise ModelError(f"the FFN activation of block {layer} ({sites[layer].name}) has shape "
                                 f"{tuple(activation.shape)}, expected ({ids.shape[0]}, {ids.shape[1]}, width)")
            flat = activation.reshape(-1, activation.shape[-1])[real]  # (n_tokens, width)
            counts[layer] = (flat > 0).sum(dim=0, dtype=torch.int64)
            calls[layer] += 1
        return count

    with torch.no_grad(), _hooks(sites, make):
        model(input_ids=ids, attention_mask=mask, use_cache=False)
    if calls != [1] * len(sites):
        raise ModelError(f"the FFN activation module of {type(model).__name__} ran {calls} times per block in "
                         "one forward pass, expected once: it cannot be read per neuron here")
    widths = {c.shape[0] for c in counts}
    if len(widths) != 1:
        raise ModelError(f"the FFN widths differ across blocks ({sorted(widths)}); LAPE needs one width")
    return torch.stack(counts), int(real.sum())


def sequence_limit(model, max_length: int) -> int:
    """``max_length``, lowered to the model's number of positions where it has fewer."""
    from xlt.models import unwrap_model

    config = unwrap_model(model).config
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return min(max_length, limit) if limit else max_length


def _batches(ids: Sequence[list[int]], batch_size: int, pad: int) -> Iterator[tuple[Any, Any]]:
    import torch

    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        width = max(map(len, chunk))
        yield (torch.tensor([s + [pad] * (width - len(s)) for s in chunk]),
               torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in chunk]))


def encode_lines(tokenizer, lines: Iterable[str], *, max_length: int, max_tokens: int | None = None,
                 buffer: int = 1024) -> Iterator[list[list[int]]]:
    """Token ids of each line (special tokens as the tokenizer adds them, truncated to
    ``max_length``), in chunks of about ``buffer`` lines sorted by length (less padding), until
    ``max_tokens`` tokens (the last line cut to fit)."""
    total = 0
    chunk: list[str] = []

    def flush(texts):
        nonlocal total
        out = []
        for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]:
            if max_tokens is not None and total + len(ids) > max_tokens:
                ids = ids[:max_tokens - total]
            if ids:
                out.append(list(ids))
                total += len(ids)
        return sorted(out, key=len)

    for line in lines:
        chunk.append(line)
        if len(chunk) == buffer:
            yield flush(chunk)
            chunk = []
            if max_tokens is not None and total >= max_tokens:
                return
    if chunk:
        yield flush(chunk)


def activation_probability(model, tokenizer, corpora: Mapping[str, Iterable[str]], *, batch_size: int = 8,
                           max_length: int = 512, max_tokens: int | None = None,
                           progress: Callable[[str, int], Any] | None = None):
    """Activation probabilities ``(languages, layers, width)`` float32 and the tokens counted per
    language, streamed over ``corpora`` (language -> lines of text, each line one sequence,
    truncated to ``max_length`` or the model's positions, whichever is fewer).

    Memory is bounded by one batch's forward pass and ``(layers, width)`` counts per language.
    ``progress(language, n_tokens)`` is called after each batch.
    """
    import torch

    if not corpora:
        raise ConfigError("no corpus to count activations on")
    if batch_size < 1 or max_length < 1:
        raise ConfigError(f"batch size and max length must be >= 1, got {batch_size} and {max_length}")
    sites = activation_sites(model)
    max_length = sequence_limit(model, max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    probabilities, n_tokens = [], {}
    for language, lines in corpora.items():
        total, seen = None, 0
        for chunk in encode_lines(tokenizer, lines, max_length=max_length, max_tokens=max_tokens):
            for ids, mask in _batches(chunk, batch_size, pad):
                counts, n = positive_counts(model, ids, mask, sites=sites)
                total = counts if total is None else total + counts
                seen += n
                if progress is not None:
                    progress(language, n)
        if not seen:
            raise DataError(f"the {language} corpus has no token to count")
        probabilities.append((total.double() / seen).float().cpu())
        n_tokens[language] = seen
    return torch.stack(probabilities), n_tokens


def lape(probabilities):
    """LAPE ``(layers, width)`` in nats from ``(languages, layers, width)`` probabilities.

    A neuron with probability 0 on every language has no distribution: its LAPE is NaN.
    """
    import torch

    p = torch.as_tensor(probabilities, dtype=torch.float64)
    total = p.sum(dim=0, keepdim=True)
    q = p / total
    terms = torch.where(q > 0, q * q.log(), torch.zeros_like(q))
    entropy = -terms.sum(dim=0)
    entropy[total[0] == 0] = math.nan
    return entropy.float()


def nearest_rank(values, quantile: float) -> float:
    """The ``round(quantile * n)``-th smallest of ``values`` (at least the 1st): the percentile of
    the paper's released code (``kthvalue``)."""
    import torch

    flat = torch.as_tensor(values).flatten().double()
    k = min(max(1, round(quantile * flat.numel())), flat.numel())
    return float(flat.kthvalue(k).values)


@dataclass
class NeuronSelection:
    """The language-specific neurons: per language a list of ``(layer, index)``, sorted."""

    languages: list[str]
    neurons: dict[str, list[tuple[int, int]]]
    num_layers: int
    filter_threshold: float
    activation_threshold: float
    n_candidates: int
    n_selected: int
    settings: dict = field(default_factory=dict)

    def counts_per_layer(self) -> dict[str, list[int]]:
        out = {}
        for language, pairs in self.neurons.items():
            counts = [0] * self.num_layers
            for layer, _ in pairs:
                counts[layer] += 1
            out[language] = counts
        return out

    def overlap(self) -> dict[str, dict[str, int]]:
        """``overlap[a][b]``: neurons in both languages' sets (the diagonal: the set's size)."""
        sets = {lang: set(pairs) for lang, pairs in self.neurons.items()}
        return {a: {b: len(sets[a] & sets[b]) for b in self.languages} for a in self.languages}

    def by_layer(self, language: str) -> dict[int, list[int]]:
        """``{layer: [neuron indices]}`` of one language (the form :func:`deactivate_neurons` takes)."""
        if language not in self.neurons:
            raise ConfigError(f"no language {language!r} (languages: {', '.join(self.languages)})")
        out: dict[int, list[int]] = {}
        for layer, index in self.neurons[language]:
            out.setdefault(layer, []).append(index)
        return out

    def to_dict(self) -> dict:
        return {"languages": self.languages, "settings": self.settings,
                "filter_threshold": self.filter_threshold, "activation_threshold": self.activation_threshold,
                "n_candidates": self.n_candidates, "n_selected": self.n_selected,
                "counts": {lang: len(pairs) for lang, pairs in self.neurons.items()},
                "counts_per_layer": self.counts_per_layer(), "overlap": self.overlap(),
                "neurons": {lang: [list(p) for p in pairs] for lang, pairs in self.neurons.items()}}


def select_neurons(probabilities, languages: Sequence[str], *, lape_quantile: float = 0.01,
                   filter_quantile: float = 0.95, threshold_quantile: float = 0.95,
                   entropy=None) -> NeuronSelection:
    """The paper's selection from ``(languages, layers, width)`` activation probabilities.

    Candidates: neurons whose largest probability over languages is above the ``filter_quantile``
    percentile of all probabilities. Selected: the ``round(lape_quantile * layers * width)``
    candidates of lowest LAPE (ties: lower layer, then lower index, first). Language ``k``'s set:
    the selected neurons whose probability for ``k`` is above the ``threshold_quantile`` percentile.
    """
    import torch

    p = torch.as_tensor(probabilities, dtype=torch.float32)
    if p.dim() != 3 or p.shape[0] != len(languages):
        raise ConfigError(f"probabilities of shape {tuple(p.shape)} do not match {len(languages)} languages")
    for name, value in (("--lape-quantile", lape_quantile), ("--filter-quantile", filter_quantile),
                        ("--threshold-quantile", threshold_quantile)):
        if not 0.0 < value <= 1.0:
            raise ConfigError(f"{name} must be in (0, 1], got {value}")
    n_languages, num_layers, width = p.shape
    scores = lape(p) if entropy is None else torch.as_tensor(entropy, dtype=torch.float32)
    filter_threshold = nearest_rank(p, filter_quantile)
    activation_threshold = nearest_rank(p, threshold_quantile)
    candidate = (p > filter_threshold).any(dim=0) & ~scores.isnan()
    flat_scores = torch.where(candidate, scores, torch.full_like(scores, math.inf)).flatten()
    n_pick = min(round(lape_quantile * num_layers * width), int(candidate.sum()))
    order = torch.sort(flat_scores, stable=True).indices[:n_pick]
    picked = torch.zeros(num_layers * width, dtype=torch.bool)
    picked[order] = True
    picked = picked.reshape(num_layers, width)
    neurons = {}
    for k, language in enumerate(languages):
        layers, indices = torch.nonzero(picked & (p[k] > activation_threshold), as_tuple=True)
        neurons[language] = [(int(a), int(b)) for a, b in zip(layers.tolist(), indices.tolist())]
    settings = {"lape_quantile": lape_quantile, "filter_quantile": filter_quantile,
                "threshold_quantile": threshold_quantile}
    return NeuronSelection(list(languages), neurons, num_layers, filter_threshold, activation_threshold,
                           int(candidate.sum()), n_pick, settings)


# --------------------------------------------------------------------------------------------
# Steering


@contextlib.contextmanager
def deactivate_neurons(model, neurons: Mapping[int, Sequence[int]] | Iterable[tuple[int, int]], *,
                       value: float = 0.0) -> Iterator[None]:
    """Inside the ``with``, the chosen FFN activations are set to ``value`` (0: deactivated) on
    every token; every other activation is left as it is. ``neurons``: ``{layer: [indices]}`` or
    ``(layer, index)`` pairs, layers counted from 0. The hooks are removed on exit."""
    import torch

    sites = activation_sites(model)
    by_layer: dict[int, list[int]] = {}
    items = neurons.items() if isinstance(neurons, Mapping) else None
    if items is None:
        for layer, index in neurons:
            by_layer.setdefault(int(layer), []).append(int(index))
    else:
        for layer, indices in items:
            by_layer.setdefault(int(layer), []).extend(int(i) for i in indices)
    for layer in by_layer:
        if not 0 <= layer < len(sites):
            raise ConfigError(f"layer {layer} is outside the model's blocks 0..{len(sites) - 1}")
    index_cache: dict = {}

    def make(layer: int):
        if layer not in by_layer or not by_layer[layer]:
            return lambda activation: None

        def set_value(activation):
            key = (layer, activation.device)
            if key not in index_cache:
                index = torch.tensor(sorted(set(by_layer[layer])), dtype=torch.long, device=activation.device)
                if int(index.max()) >= activation.shape[-1] or int(index.min()) < 0:
                    raise ConfigError(f"neuron index outside block {layer}'s FFN width {activation.shape[-1]}")
                index_cache[key] = index
            changed = activation.clone()
            changed[..., index_cache[key]] = value
            return changed
        return set_value

    with _hooks(sites, make):
        yield


def line_perplexity(model, tokenizer, lines: Sequence[str], *, batch_size: int = 8, max_length: int = 512) -> dict:
    """Perplexity of ``lines`` (each its own sequence, truncated to ``max_length`` or the model's
    positions): ``exp`` of the
    mean next-token NLL over every predicted real token. Returns ``{"ppl", "nll", "n_tokens"}``."""
    import torch

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    max_length = sequence_limit(model, max_length)
    encoded = [ids for ids in tokenizer(list(lines), truncation=True, max_length=max_length)["input_ids"]
               if len(ids) >= 2]
    if not encoded:
        raise DataError("no line of at least 2 tokens to score")
    total, count = 0.0, 0
    with torch.no_grad():
        for ids, mask in _batches(encoded, batch_size, pad):
            ids, mask = ids.to(device), mask.to(device)
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
            keep = mask[:, 1:].bool()
            total += float(nll[keep].double().sum())
            count += int(keep.sum())
    return {"ppl": math.exp(total / count), "nll": total / count, "n_tokens": count}


def greedy_generate(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int = 32) -> list[str]:
    """Greedy continuations of ``prompts``, one at a time (no padding), decoded without specials."""
    import torch

    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for prompt in prompts:
            ids = torch.tensor([tokenizer(prompt)["input_ids"]], device=device)
            generated = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                       max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
            out.append(tokenizer.decode(generated[0, ids.shape[1]:], skip_special_tokens=True))
    return out
