"""Per-language exact-match accuracy of greedily generated task completions.

For :class:`~xlt.formats.TaskExample` records (``prompt`` -> ``completion``): the prompts are
batched with left padding and completed greedily; a prediction is the generated text cut at
EOS and at the first stop string (default a newline), and it is correct when it equals the
gold completion after whitespace normalisation (leading/trailing whitespace stripped, inner
runs collapsed to one space).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from xlt.errors import ConfigError


@dataclass
class Prediction:
    lang: str
    prompt: str
    completion: str
    prediction: str
    correct: bool

    def to_dict(self) -> dict:
        return {"lang": self.lang, "prompt": self.prompt, "completion": self.completion,
                "prediction": self.prediction, "correct": self.correct}


def normalize_answer(text: str) -> str:
    """Whitespace-normalised text: stripped, inner whitespace runs collapsed to one space."""
    return " ".join(text.split())


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
    """``text`` up to the earliest occurrence of any stop string."""
    end = len(text)
    for stop in stops:
        if stop:
            k = text.find(stop)
            if k != -1:
                end = min(end, k)
    return text[:end]


def generate_completions(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int,
                         batch_size: int = 16, stop: Sequence[str] = ("\n",),
                         progress: bool = False) -> list[str]:
    """Greedy completions of ``prompts`` (left-padded batches, longest first)."""
    import torch

    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    outputs: list[str | None] = [None] * len(prompts)
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    batches = [order[k:k + batch_size] for k in range(0, len(order), max(1, batch_size))]
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="generating", unit="batch")
    try:
        with torch.inference_mode():
            for batch in batches:
                enc = tokenizer([prompts[i] for i in batch], return_tensors="pt", padding=True)
                enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
                out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     num_beams=1, pad_token_id=pad_id,
                                     eos_token_id=tokenizer.eos_token_id)
                new = out[:, enc["input_ids"].shape[1]:]
                for row, i in zip(new, batch):
                    ids = row.tolist()
                    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id in ids:
                        ids = ids[:ids.index(tokenizer.eos_token_id)]
                    text = tokenizer.decode(ids, skip_special_tokens=True)
                    outputs[i] = cut_at_stops(text, stop)
    finally:
        tokenizer.padding_side = old_side
    return outputs  # type: ignore[return-value]


def evaluate_task(model, tokenizer, examples: Iterable, *, max_new_tokens: int | None = None,
                  batch_size: int = 16, stop: Sequence[str] = ("\n",),
                  progress: bool = False) -> tuple[dict[str, dict[str, Any]], list[Prediction]]:
    """Exact-match accuracy per language of greedy completions of ``examples``.

    ``examples``: :class:`~xlt.formats.TaskExample` records. ``max_new_tokens`` defaults to
    the longest gold completion in tokens plus 2 (a length budget shared by every item).
    Returns ``({lang: {"accuracy", "n"}}, predictions)``.
    """
    examples = list(examples)
    if not examples:
        raise ConfigError("no examples to evaluate")
    if max_new_tokens is None:
        longest = max(len(tokenizer.encode(e.completion, add_special_tokens=False)) for e in examples)
        max_new_tokens = longest + 2
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    texts = generate_completions(model, tokenizer, [e.prompt for e in examples],
                                 max_new_tokens=max_new_tokens, batch_size=batch_size, stop=stop,
                                 progress=progress)
    predictions = [Prediction(e.lang, e.prompt, e.completion, text,
                              normalize_answer(text) == normalize_answer(e.completion))
                   for e, text in zip(examples, texts)]
    return task_table(predictions), predictions


def task_table(predictions: Iterable[Prediction]) -> dict[str, dict[str, Any]]:
    """``{lang: {"accuracy", "n"}}`` in order of first appearance."""
    counts: dict[str, list[int]] = {}
    for p in predictions:
        c = counts.setdefault(p.lang, [0, 0])
        c[0] += int(p.correct)
        c[1] += 1
    return {lang: {"accuracy": right / n, "n": n} for lang, (right, n) in counts.items()}


def format_task_table(table, title: str = "") -> str:
    header = f"{'lang':<10}{'accuracy':>10}{'n':>8}"
    lines = ([title] if title else []) + [header, "-" * len(header)]
    for lang, row in table.items():
        lines.append(f"{lang:<10}{100 * row['accuracy']:>10.2f}{row['n']:>8d}")
    if len(table) > 1:
        rows = list(table.values())
        lines.append(f"{'average':<10}{100 * sum(r['accuracy'] for r in rows) / len(rows):>10.2f}"
                     f"{sum(r['n'] for r in rows):>8d}")
    return "\n".join(lines)
