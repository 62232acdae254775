"""Layer-wise hidden-state and gradient similarity of parallel inputs, for any causal LM.

For each parallel input (the same text in two cloned languages, or a translation pair), one
forward pass per side collects the residual stream after every block (forward hooks, so the
last layer is the raw block output, *not* the final-normed ``hidden_states[-1]`` of
transformers 5), and one backward pass of the mean next-token loss gives every parameter's
gradient. Then, per layer:

* token-level cosine: position by position (``"position"``, clones: equal lengths), or over a
  maximum-weight bipartite token matching chosen once on the layer-mean cosine matrix and used
  for every layer (``"matching"``, real language pairs), as in the paper's
  ``compare_representations``;
* cosine of the mean-pooled sentence vectors;
* linear CKA between the two sides' mean-pooled vectors over all inputs;

and per parameter tensor, the cosine of the two flattened gradients.

Layer indices: 0 is the input of the first block (embeddings, plus positions where the model
adds them), ``i`` >= 1 the output of block ``i - 1``; the paper reports layers 1..L.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from xlt.errors import ConfigError, DataError

MODES = ("position", "matching")
COS_EPS = 1e-8


# --------------------------------------------------------------------------------------------
# Pure functions on tensors


def cosine_matrix(a, b):
    """``(..., T1, D)`` x ``(..., T2, D)`` -> ``(..., T1, T2)`` cosine similarities."""
    import torch

    a = a / torch.clamp(a.norm(dim=-1, keepdim=True), min=COS_EPS)
    b = b / torch.clamp(b.norm(dim=-1, keepdim=True), min=COS_EPS)
    return a @ b.transpose(-1, -2)


def _hungarian_min(cost):
    """Minimum-cost assignment of every row of ``cost`` (n x m, n <= m) to a distinct column."""
    import numpy as np

    n, m = cost.shape
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    p = np.zeros(m + 1, dtype=np.int64)  # p[j]: row (1-based) matched to column j
    way = np.zeros(m + 1, dtype=np.int64)
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = p[j0]
            free = ~used[1:]
            current = cost[i0 - 1] - u[i0] - v[1:]
            better = free & (current < minv[1:])
            minv[1:][better] = current[better]
            way[1:][better] = j0
            candidates = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(candidates)) + 1
            delta = candidates[j1 - 1]
            u[p[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    rows = [int(p[j]) - 1 for j in range(1, m + 1) if p[j]]
    cols = [j - 1 for j in range(1, m + 1) if p[j]]
    order = sorted(range(len(rows)), key=rows.__getitem__)
    return [rows[k] for k in order], [cols[k] for k in order]


def max_weight_matching(weights) -> list[tuple[int, int]]:
    """Maximum-weight full bipartite matching of a ``(T1, T2)`` weight matrix.

    Matches ``min(T1, T2)`` pairs (as networkx ``minimum_weight_full_matching`` on ``-W`` and
    ``scipy.optimize.linear_sum_assignment(-W)`` do). Returns ``[(i, j), ...]`` sorted by ``i``.
    """
    import numpy as np

    w = np.asarray(weights.detach().cpu().double() if hasattr(weights, "detach") else weights,
                   dtype=np.float64)
    if w.ndim != 2 or 0 in w.shape:
        raise DataError(f"matching needs a non-empty 2-D weight matrix, got shape {tuple(w.shape)}")
    try:  # scipy, when installed, is faster on long sequences; the result is the same
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(-w)
        return sorted(zip(map(int, rows), map(int, cols)))
    except ImportError:
        pass
    if w.shape[0] <= w.shape[1]:
        rows, cols = _hungarian_min(-w)
        return list(zip(rows, cols))
    cols, rows = _hungarian_min(-w.T)
    return sorted(zip(rows, cols))


def hidden_similarity(h1, h2, mode: str = "position"):
    """Token-level cosine similarity per layer of two hidden-state stacks.

    ``h1``: ``(layers, T1, D)``, ``h2``: ``(layers, T2, D)``. ``mode`` ``"position"``: needs
    ``T1 == T2``; ``sim[l] = mean_t cos(h1[l, t], h2[l, t])``. ``"matching"``: ``C[l, i, j] =
    cos(h1[l, i], h2[l, j])``, one maximum-weight matching M on ``mean_l C[l]``, ``sim[l] =
    mean_{(i, j) in M} C[l, i, j]``. Returns a ``(layers,)`` float tensor.
    """
    import torch

    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    h1 = torch.as_tensor(h1)
    h2 = torch.as_tensor(h2)
    if h1.dim() != 3 or h2.dim() != 3 or h1.shape[0] != h2.shape[0] or h1.shape[2] != h2.shape[2]:
        raise DataError(f"hidden states must be (layers, tokens, dim) with equal layers and dim, got "
                        f"{tuple(h1.shape)} and {tuple(h2.shape)}")
    if h1.shape[1] == 0 or h2.shape[1] == 0:
        raise DataError("hidden states of an empty sequence")
    h1 = h1.float()
    h2 = h2.float()
    if mode == "position":
        if h1.shape[1] != h2.shape[1]:
            raise DataError(f"position-wise similarity needs inputs of equal length, got {h1.shape[1]} "
                            f"and {h2.shape[1]} tokens (use mode 'matching' for unequal lengths)")
        return torch.nn.functional.cosine_similarity(h1, h2, dim=-1, eps=COS_EPS).mean(dim=1)
    cos = cosine_matrix(h1, h2)
    pairs = max_weight_matching(cos.mean(dim=0))
    rows = torch.tensor([i for i, _ in pairs])
    cols = torch.tensor([j for _, j in pairs])
    return cos[:, rows, cols].mean(dim=1)


def pooled_cosine(h1, h2):
    """``(layers,)`` cosine of the mean-pooled (over tokens) vectors of two ``(layers, T, D)`` stacks."""
    import torch

    return torch.nn.functional.cosine_similarity(h1.float().mean(1), h2.float().mean(1), dim=-1, eps=COS_EPS)


def linear_cka(x, y) -> float:
    """Linear CKA of two ``(n, d)`` representation matrices of the same ``n`` inputs.

    ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred ``Xc``, ``Yc``
    (Kornblith et al., 2019). NaN when either side has no variance.
    """
    import torch

    x = torch.as_tensor(x).double()
    y = torch.as_tensor(y).double()
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
        raise DataError(f"CKA needs (n, d) matrices with equal n, got {tuple(x.shape)} and {tuple(y.shape)}")
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    cross = (y.T @ x).norm() ** 2
    denominator = (x.T @ x).norm() * (y.T @ y).norm()
    return float(cross / denominator) if float(denominator) > 0 else float("nan")


def gradient_cosine(g1: dict, g2: dict) -> dict[str, float]:
    """Cosine of the flattened gradients of every parameter name present in both dicts."""
    import torch

    out = {}
    for name, a in g1.items():
        b = g2.get(name)
        if b is None:
            continue
        out[name] = float(torch.nn.functional.cosine_similarity(a.reshape(1, -1).float(),
                                                               b.reshape(1, -1).float(), eps=COS_EPS))
    return out


def pack_parallel(pairs: Iterable[tuple[Sequence[int], Sequence[int]]], *, max_len: int = 512,
                  min_len: int = 128, check_last: bool = True) -> list[tuple[list[int], list[int]]]:
    """Glue consecutive parallel lines into sequences of at most ``max_len`` tokens per side.

    The reference rule (its ``parallel_dataset``): skip a pair with a side longer than
    ``max_len``; append when both sides stay <= ``max_len``; otherwise close the current pair
    (kept iff ``min(len1, len2) >= min_len``) and start a new one with this line. The reference
    never checks the final pair; ``check_last=True`` applies the same minimum to it.
    """
    out: list[tuple[list[int], list[int]]] = []
    current: tuple[list[int], list[int]] | None = None

    def close(pair):
        if pair is not None and min(len(pair[0]), len(pair[1])) >= min_len:
            out.append(pair)

    for a, b in pairs:
        a, b = list(a), list(b)
        if len(a) > max_len or len(b) > max_len:
            continue
        if current is not None and len(current[0]) + len(a) <= max_len and len(current[1]) + len(b) <= max_len:
            current[0].extend(a)
            current[1].extend(b)
            continue
        close(current)
        current = (a, b)
    if current is not None:
        if check_last:
            close(current)
        else:
            out.append(current)
    return out


# --------------------------------------------------------------------------------------------
# Collecting states and gradients from a model


def layer_states(model, input_ids, *, gradients: bool = True):
    """One forward (and, with ``gradients``, one backward) of a single sequence.

    ``input_ids``: ``(T,)`` or ``(1, T)``. Returns ``(states, grads)``: ``states`` ``(L + 1, T,
    D)`` detached float32 (0 = input of block 0, i = output of block i - 1), ``grads`` a dict
    parameter name -> gradient of the mean next-token cross-entropy (empty without
    ``gradients``).
    """
    import torch

    from xlt.models import decoder_blocks

    ids = torch.as_tensor(input_ids, dtype=torch.long).reshape(1, -1)
    if ids.shape[1] < 2 and gradients:
        raise DataError("an input needs at least 2 tokens for a next-token loss")
    device = next(model.parameters()).device
    ids = ids.to(device)
    blocks = decoder_blocks(model)
    captured: list = [None] * (len(blocks) + 1)

    def first(value):
        return value[0] if isinstance(value, (tuple, list)) else value

    def pre_hook(module, args, kwargs):
        captured[0] = first(args) if args else kwargs.get("hidden_states")

    handles = [blocks[0].register_forward_pre_hook(pre_hook, with_kwargs=True)]
    for index, block in enumerate(blocks):
        def hook(module, args, output, _i=index + 1):
            captured[_i] = first(output)
        handles.append(block.register_forward_hook(hook))
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    try:
        with torch.set_grad_enabled(gradients):
            outputs = model(input_ids=ids, labels=ids if gradients else None, use_cache=False)
            grads = {}
            if gradients:
                values = torch.autograd.grad(outputs.loss, [p for _, p in params], allow_unused=True)
                grads = {n: g.detach() for (n, _), g in zip(params, values) if g is not None}
    finally:
        for handle in handles:
            handle.remove()
    if any(c is None for c in captured):
        raise DataError(f"could not capture every block's output of {type(model).__name__}")
    states = torch.stack([c.detach()[0].float() for c in captured])
    return states, grads


_LAYER_RE = re.compile(r"^(?P<prefix>.*?)\.(?P<layer>\d+)\.(?P<type>.+)$")


def parameter_layout(model) -> dict[str, tuple[int | None, str]]:
    """Parameter name -> (block index or None, parameter type such as ``attn.c_attn.weight``)."""
    from xlt.models import decoder_blocks

    blocks = decoder_blocks(model)
    block_param_ids = {id(p): i for i, block in enumerate(blocks) for p in block.parameters()}
    layout = {}
    for name, param in model.named_parameters():
        layer = block_param_ids.get(id(param))
        match = _LAYER_RE.match(name)
        if layer is not None and match is not None:
            layout[name] = (layer, match.group("type"))
        else:
            layout[name] = (None, name)
    return layout


@dataclass
class SimilarityResult:
    """Similarity of one model over a set of parallel inputs (means over inputs per layer).

    ``hidden``: ``(n_inputs, L + 1)`` token-level cosine; ``pooled``: mean-pooled cosine, same
    shape; ``cka``: ``(L + 1,)`` linear CKA over inputs; ``gradients``: parameter name ->
    ``(n_inputs,)`` cosine; ``layout``: parameter name -> (layer, type).
    """

    mode: str
    hidden: list[list[float]]
    pooled: list[list[float]]
    cka: list[float]
    gradients: dict[str, list[float]] = field(default_factory=dict)
    layout: dict[str, tuple[int | None, str]] = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return len(self.cka) - 1

    def layer_means(self) -> dict[str, list[float]]:
        """Per-layer mean and std of the token-level cosine, mean pooled cosine, CKA."""
        import torch

        hidden = torch.tensor(self.hidden, dtype=torch.float64)
        pooled = torch.tensor(self.pooled, dtype=torch.float64)
        std = hidden.std(0, unbiased=False) if len(hidden) > 1 else torch.zeros(hidden.shape[1])
        return {"hidden_cos": hidden.mean(0).tolist(), "hidden_cos_std": std.tolist(),
                "pooled_cos": pooled.mean(0).tolist(), "cka": list(self.cka)}

    def gradient_means(self) -> dict[str, float]:
        return {name: sum(v) / len(v) for name, v in self.gradients.items() if v}

    def gradient_matrix(self) -> tuple[list[str], list[list[float]]]:
        """Parameter types x blocks matrix of mean gradient cosine (NaN where absent)."""
        means = self.gradient_means()
        types: list[str] = []
        for name in means:
            layer, kind = self.layout.get(name, (None, name))
            if layer is not None and kind not in types:
                types.append(kind)
        matrix = [[float("nan")] * self.n_layers for _ in types]
        for name, value in means.items():
            layer, kind = self.layout.get(name, (None, name))
            if layer is not None and layer < self.n_layers:
                matrix[types.index(kind)][layer] = value
        return types, matrix

    def mean_block_gradient_cosine(self) -> float:
        """Average of the types x blocks matrix (embeddings, head and final norm excluded)."""
        _, matrix = self.gradient_matrix()
        values = [v for row in matrix for v in row if not math.isnan(v)]
        return sum(values) / len(values) if values else float("nan")

    def to_dict(self) -> dict:
        types, matrix = self.gradient_matrix()
        return {"mode": self.mode, "n_inputs": len(self.hidden), "n_layers": self.n_layers,
                "layers": list(range(self.n_layers + 1)), **self.layer_means(),
                "gradient_cos": self.gradient_means(), "gradient_types": types,
                "gradient_matrix": matrix,
                "mean_block_gradient_cos": self.mean_block_gradient_cosine()}


def analyze_parallel(model, inputs: Sequence[tuple], *, mode: str = "position", gradients: bool = True,
                     progress: Callable[[int], None] | None = None) -> SimilarityResult:
    """Similarities of ``model`` over parallel inputs ``[(ids_a, ids_b), ...]`` (model vocabulary ids).

    The model is put in eval mode (no dropout) for the duration; parameters that do not
    require grad get no gradient similarity.
    """
    import torch

    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not inputs:
        raise DataError("no parallel inputs to compare")
    was_training = model.training
    model.eval()
    hidden, pooled, sides_a, sides_b = [], [], [], []
    grad_sims: dict[str, list[float]] = {}
    try:
        for number, (ids_a, ids_b) in enumerate(inputs, 1):
            if mode == "position" and len(ids_a) != len(ids_b):
                raise DataError(f"input {number}: position-wise similarity needs equal lengths, got "
                                f"{len(ids_a)} and {len(ids_b)} tokens")
            states_a, grads_a = layer_states(model, ids_a, gradients=gradients)
            states_b, grads_b = layer_states(model, ids_b, gradients=gradients)
            hidden.append(hidden_similarity(states_a, states_b, mode).tolist())
            pooled.append(pooled_cosine(states_a, states_b).tolist())
            sides_a.append(states_a.mean(1))
            sides_b.append(states_b.mean(1))
            for name, value in gradient_cosine(grads_a, grads_b).items():
                grad_sims.setdefault(name, []).append(value)
            if progress is not None:
                progress(1)
    finally:
        model.train(was_training)
    a = torch.stack(sides_a)  # (n, L + 1, D)
    b = torch.stack(sides_b)
    cka = [linear_cka(a[:, layer], b[:, layer]) if len(inputs) > 1 else float("nan")
           for layer in range(a.shape[1])]
    return SimilarityResult(mode=mode, hidden=hidden, pooled=pooled, cka=cka, gradients=grad_sims,
                            layout=parameter_layout(model) if gradients else {})


def clone_embedding_similarity(model, base_vocab_size: int, language: int = 1, mask=None) -> dict[str, float]:
    """Cosine between each cloned token's row and its original's, in the input and output embeddings.

    The paper's Fig. 6: ``clones`` = mean over cloned ids ``i > 0`` of ``cos(E[i], E[i + l*V])``;
    ``all_pairs`` = mean of the full cosine matrix over every row (diagonal included), computed
    in closed form as ``||sum_i e_i / |e_i| ||^2 / N^2``. Returns ``{"input_clones",
    "input_all_pairs", "output_clones", "output_all_pairs"}`` (output only for an untied head).
    """
    import torch

    out = {}
    matrices = {"input": model.get_input_embeddings().weight}
    head = model.get_output_embeddings()
    if head is not None and head.weight.data_ptr() != matrices["input"].data_ptr():
        matrices["output"] = head.weight
    ids = torch.arange(1, base_vocab_size)
    if mask is not None:
        ids = ids[torch.as_tensor(mask, dtype=torch.bool)[1:]]
    for name, weight in matrices.items():
        weight = weight.detach().float()
        if weight.shape[0] < (language + 1) * base_vocab_size:
            continue
        a = weight[ids]
        b = weight[ids + language * base_vocab_size]
        out[f"{name}_clones"] = float(torch.nn.functional.cosine_similarity(a, b, dim=-1, eps=COS_EPS).mean())
        norms = weight.norm(dim=-1, keepdim=True)
        rows = weight[norms.squeeze(1) > 0] / norms[norms.squeeze(1) > 0]
        out[f"{name}_all_pairs"] = float((rows.sum(0).norm() ** 2) / rows.shape[0] ** 2)
    return out
