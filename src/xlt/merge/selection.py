"""Choosing AdaMergeX's t on a target-language dev set, and applying merged adapters to a model.

The paper tunes t per task on one target language's validation set (French, or Vietnamese where
French has none) and reuses it for every other language. :func:`select_t` evaluates a grid of t
values and returns the curve; :func:`score_task` is the small scorer it uses:

* ``accuracy`` — exact match (after stripping surrounding whitespace) of the greedy completion
  of each :class:`~xlt.formats.TaskExample` prompt, cut at EOS;
* ``loss`` — mean negative log-likelihood per completion token given the prompt (the prompt is
  tokenised with the tokenizer's special tokens, the completion without, followed by EOS).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Sequence

from xlt.errors import ConfigError, ModelError
from xlt.merge.adapters import AdapterState

METRICS = ("accuracy", "loss")


def peft_config_from_dict(config: dict):
    """A PEFT config object from an ``adapter_config.json`` dict."""
    from peft import PeftConfig

    known = {k: v for k, v in config.items() if k not in ("peft_version",)}
    try:
        return PeftConfig.from_peft_type(**known)
    except TypeError as exc:  # a key this PEFT version does not know
        raise ModelError(f"adapter config not understood by this PEFT version ({exc})") from None


def attach_adapter(model, adapter: AdapterState, *, adapter_name: str = "default"):
    """Wrap ``model`` in a PEFT model carrying ``adapter`` (in memory, eval mode)."""
    from peft import get_peft_model, set_peft_model_state_dict

    config = peft_config_from_dict(adapter.config)
    config.inference_mode = True
    peft_model = get_peft_model(model, config, adapter_name=adapter_name)
    load_adapter_tensors(peft_model, adapter, adapter_name=adapter_name)
    return peft_model.eval()


def load_adapter_tensors(peft_model, adapter: AdapterState, *, adapter_name: str = "default") -> None:
    """Copy ``adapter``'s tensors into an already attached adapter of the same structure."""
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(peft_model, adapter.tensors, adapter_name=adapter_name)
    missing = [k for k in getattr(result, "missing_keys", []) if f".{adapter_name}." in k
               and ("lora_" in k or "ia3_" in k)]
    unexpected = list(getattr(result, "unexpected_keys", []))
    if missing or unexpected:
        what = missing[:1] or unexpected[:1]
        raise ModelError(f"the merged adapter does not fit the model ({len(missing)} missing, "
                         f"{len(unexpected)} unexpected tensors, e.g. {what[0]})")


def merge_into_base(model, adapter: AdapterState):
    """``model`` with ``adapter`` folded into its weights (a plain transformers model)."""
    return attach_adapter(model, adapter).merge_and_unload()


# --------------------------------------------------------------------------------------------
# Scoring


def _batches(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def completion_loss(model, tokenizer, examples: Sequence[Any], *, batch_size: int = 16) -> float:
    """Mean NLL per completion token (natural log), token-weighted over ``examples``."""
    import torch

    device = next(model.parameters()).device
    total, count = 0.0, 0
    eos = tokenizer.eos_token_id
    for batch in _batches(list(examples), batch_size):
        seqs, labels = [], []
        for ex in batch:
            p = tokenizer(ex.prompt)["input_ids"]
            c = tokenizer(ex.completion, add_special_tokens=False)["input_ids"] + ([eos] if eos is not None else [])
            seqs.append(p + c)
            labels.append([-100] * len(p) + c)
        width = max(map(len, seqs))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=device)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=device)
        lab = torch.tensor([l + [-100] * (width - len(l)) for l in labels], device=device)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        target = lab[:, 1:]
        valid = target != -100
        picked = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        total += float(-(picked * valid).sum())
        count += int(valid.sum())
    return total / max(count, 1)


def greedy_completions(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int,
                       batch_size: int = 16) -> list[str]:
    """Greedy continuations of ``prompts`` (left-padded batches), cut at EOS, special tokens removed."""
    import torch

    device = next(model.parameters()).device
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    outputs: list[str] = []
    try:
        for batch in _batches(list(prompts), batch_size):
            enc = tokenizer(list(batch), return_tensors="pt", padding=True).to(device)
            with torch.no_grad():
                gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id,
                                     eos_token_id=tokenizer.eos_token_id)
            new = gen[:, enc["input_ids"].shape[1]:]
            for row in new.tolist():
                if tokenizer.eos_token_id in row:
                    row = row[:row.index(tokenizer.eos_token_id)]
                outputs.append(tokenizer.decode(row, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = old_side
    return outputs


def score_task(model, tokenizer, examples: Sequence[Any], *, metric: str = "accuracy",
               max_new_tokens: int | None = None, batch_size: int = 16) -> dict:
    """Score ``examples`` (TaskExample-like: ``.prompt``, ``.completion``).

    Always returns ``loss``; with ``metric="accuracy"`` also ``accuracy`` (exact match of the
    greedy completion, whitespace-stripped). ``max_new_tokens`` defaults to the longest
    tokenised completion plus 2.
    """
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r} (expected one of {', '.join(METRICS)})")
    if not examples:
        raise ConfigError("no dev examples to score")
    result = {"loss": completion_loss(model, tokenizer, examples, batch_size=batch_size),
              "n": len(examples)}
    if metric == "accuracy":
        if max_new_tokens is None:
            max_new_tokens = 2 + max(len(tokenizer(ex.completion, add_special_tokens=False)["input_ids"])
                                     for ex in examples)
        predictions = greedy_completions(model, tokenizer, [ex.prompt for ex in examples],
                                         max_new_tokens=max_new_tokens, batch_size=batch_size)
        correct = sum(p.strip() == ex.completion.strip() for p, ex in zip(predictions, examples))
        result["accuracy"] = correct / len(examples)
    return result


def select_t(grid: Sequence[float], evaluate: Callable[[float], dict], *,
             metric: str = "accuracy", progress: Callable[[dict], None] | None = None) -> tuple[float, list[dict]]:
    """Evaluate every t of ``grid`` with ``evaluate(t) -> {"loss", ["accuracy"]}``; pick the best.

    Best = highest accuracy (ties: lower loss, then the earlier grid value) or lowest loss.
    Returns ``(best_t, curve)`` with one ``{"t", ...scores}`` dict per grid value, in grid order.
    """
    if not grid:
        raise ConfigError("empty t grid")
    curve = []
    for t in grid:
        point = {"t": float(t), **evaluate(float(t))}
        curve.append(point)
        if progress is not None:
            progress(point)
    if metric == "accuracy":
        key = lambda p: (-p["accuracy"], p["loss"])  # noqa: E731
    else:
        key = lambda p: (p["loss"] if math.isfinite(p["loss"]) else math.inf,)  # noqa: E731
    best = min(curve, key=key)  # min keeps the first of equal keys
    return best["t"], curve


def parse_grid(text: str) -> list[float]:
    """``"0,0.25,0.5"`` or ``"start:stop:step"`` (stop included) -> list of floats."""
    text = text.strip()
    try:
        if ":" in text:
            start, stop, step = (float(x) for x in text.split(":"))
            if step <= 0 or stop < start:
                raise ValueError
            n = int(math.floor((stop - start) / step + 1e-9)) + 1
            values = [round(start + k * step, 10) for k in range(n)]
        else:
            values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--grid: expected comma-separated numbers or start:stop:step, got {text!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise ConfigError(f"--grid: expected finite numbers, got {text!r}")
    return values
