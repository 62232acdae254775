"""``xlt demo --full``'s cloned-language experiment (Schäfer et al. 2024, arXiv 2404.07982).

Per run (a reported world and a seed) and arm, a tiny Llama is pre-trained from scratch on the
world's source corpus with one cloned language (``xlt pretrain --n_clones 1``): L1 is the source
text, L2 the same text with every token id shifted into its own block (special ids shared), and
each training sequence is L1 or L2 at random. The arms differ only in the share of L2:

* ``50-50``: p_clone 0.5 (the baseline);
* ``90-10``: p_clone 0.1 (the paper's imbalance: L1 90 %, L2 10 %);
* ``schedule``: ``language_schedule`` ``0.1_0.9``, the paper's schedule (90/10 for the first half
  of the steps, 10/90 for the second: 50/50 over the run).

Every arm of a run starts from the same initial weights, reads the same windows in the same order
and draws each sequence's language from the same uniform numbers (only the threshold differs), so
the arms are paired; and every arm is scored on the same held-out sentences (the last
``heldout_lines`` lines of the corpus, never trained on):

* clone similarity: the token-level cosine of a sentence's hidden states and its clone's, layer
  by layer (``xlt.analysis.similarity``, position by position); the 50/50 step also scores the
  untrained model of the same seed (the trained models' initial weights);
* per sentence, the mean negative log-likelihood per token in L1 and in L2, and a unigram model's
  (fitted on the training lines, add-one) on the same L1 tokens;
* per language, the sliding-window perplexity of the held-out stream (``xlt eval ppl``'s rule).

Verdicts (:func:`reproduction`): ``cloned``, 90/10 against 50/50 on clone similarity (per held-out
sentence, the mean over the middle layers 1..L−1, the analogue of the paper's layers 1-10 of 12);
``cloned schedule``, the schedule against 50/50 on held-out NLL over both languages. Settings were
chosen on world 0's held-out lines only (see ``settings``' ``"chosen"``).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

KEY = "cloned"
ARMS = ("50-50", "90-10", "schedule")


def settings(quick: bool) -> dict:
    """The experiment's settings; ``quick``: a tiny model and a few steps (seconds)."""
    s = {
        "arms": {"50-50": {"p_clone": 0.5, "language_schedule": None},
                 "90-10": {"p_clone": 0.1, "language_schedule": None},
                 "schedule": {"p_clone": 0.1, "language_schedule": "0.1_0.9"}},
        "model": {"layers": 4, "hidden": 64, "heads": 4, "mlp": 256},
        "seq_len": 64, "steps": 400, "batch_size": 32, "lr": 3e-3, "warmup": 30,
        "runs_per_world": 2, "heldout_lines": 500, "items": 200,
        "chosen": (
            "budget searched on world 0 only (source corpus, its last 500 lines held out as dev; the 50/50 model "
            "against the untrained model of the same seed, 64 dev sentences), upwards from the default demo's 200 "
            "steps. Criterion for 'sharing appears clearly', fixed after the first measurement (4 x 64, 200 steps, "
            "seed 0: gain +0.105, interval +0.077 to +0.131, a trained cosine of 0.057): at the middle layer the "
            "per-sentence gain (trained minus untrained cosine) has a 95 % bootstrap interval whose low bound is at "
            "least 0.1 cosine. Budgets tried (layers x hidden, steps, window, seed: gain at layer 2 and its "
            "interval; CPU seconds of training): 4 x 64, 200, 64, s0: +0.105 (+0.077 to +0.131), 26 s; 4 x 64, "
            "400, 64, s0/s1/s2: +0.153 (+0.126 to +0.178) / +0.094 (+0.074 to +0.115) / +0.084 (+0.062 to "
            "+0.105), 49-52 s; 4 x 64, 800, 32, s0: +0.135 (+0.108 to +0.159), 53 s; 4 x 32, 200, 64, s0/s1: "
            "+0.263 (+0.243 to +0.285) / +0.046 (200 sentences), 21 s; 4 x 32, 400, 64, s0/s1/s2: +0.259 "
            "(+0.235 to +0.285) / -0.030 (-0.046 to -0.012) / +0.077 (+0.055 to +0.101), 36 s; 4 x 32, 1000, 32, "
            "s0: +0.205 (+0.182 to +0.228), 44 s. No budget within the cost limit met the criterion with every "
            "seed: seed 0 alone chose 4 x 32 at 200 steps, which seeds 1 and 2 refuted. Chosen: 4 x 64 (MLP 256), "
            "400 steps of 32 windows of 64 tokens, lr 3e-3 and 30 warm-up steps (the default demo's), the one "
            "budget tried whose gain is above 0 with every seed (the smaller model shares more with some seeds, "
            "less with others); two runs per world (seeds 0 and 1), as the cost limit allows. The precondition "
            "is therefore the issue's 'sharing appears at all' (the gain's interval above 0 in every run), not "
            "the 0.1 margin first set. Fixed before any arm but 50/50 was trained: the verdict layers (the mean "
            "over layers 1..L-1, the paper's 1-10 of 12 without its last blocks), the schedule (the paper's "
            "0.1_0.9)"),
    }
    if quick:
        s.update(model={"layers": 2, "hidden": 16, "heads": 2, "mlp": 32}, seq_len=32, steps=8, batch_size=8,
                 warmup=2, heldout_lines=40, items=8)
    return s


def runs(fs: dict) -> list[dict]:
    """The experiment's runs: the first ``runs_per_world`` of :func:`xlt.demo.full.units` per world."""
    from xlt.demo.full import units

    return [u for u in units(fs) if u["base"] < fs[KEY]["runs_per_world"]]


def step_name(arm: str, unit: dict) -> str:
    return f"full-{KEY}-{arm}-{unit['name']}"


def middle_layers(n_layers: int) -> list[int]:
    """The verdict's layers: block outputs 1..L−1 (the paper reports layers 1..12 of 12 and its
    effect over 1..10; the last blocks specialise in the next token). At least layer 1."""
    return list(range(1, max(2, n_layers)))


# --------------------------------------------------------------------------------------------
# one arm of one run


def sentence_nll(model, ids: list[list[int]], lmap, language: str, *, eos_id: int) -> list[float]:
    """Mean negative log-likelihood per predicted token (nats) of each sentence in ``language``.

    ``ids``: the sentences' token ids (source tokenizer, no specials). Each sentence is read as in
    the training stream, after the previous line's EOS: input ``[EOS] + ids``, targets ``ids +
    [EOS]`` (``len(ids) + 1`` predictions), mapped into ``language``'s ids. Returns one value per
    sentence.
    """
    import torch

    out = []
    with torch.no_grad():
        for sentence in ids:
            row = lmap.map_ids(torch.tensor([eos_id] + list(sentence) + [eos_id]), language)
            device = next(model.parameters()).device
            logits = model(input_ids=row[None, :-1].to(device)).logits[0].float().cpu()
            logp = torch.log_softmax(logits, dim=-1)
            out.append(-float(logp.gather(1, row[1:, None]).mean()))
    return out


def unigram_nll(train_ids: list[list[int]], ids: list[list[int]], vocab_size: int, *, eos_id: int) -> list[float]:
    """A unigram model's mean NLL per token (nats) of each sentence, on :func:`sentence_nll`'s
    targets (``ids + [EOS]``); fitted on ``train_ids`` (each line followed by EOS, as in the
    training stream) with add-one smoothing over ``vocab_size`` ids."""
    from collections import Counter

    counts: Counter = Counter()
    for line in train_ids:
        counts.update(line)
        counts[eos_id] += 1
    total = sum(counts.values()) + vocab_size
    return [-sum(math.log((counts[t] + 1) / total) for t in [*s, eos_id]) / (len(s) + 1) for s in ids]


def heldout_items(lines: list[str], tokenizer, s: dict) -> tuple[list[str], list[list[int]]]:
    """The held-out sentences every arm is scored on: the first ``items`` of the last
    ``heldout_lines`` corpus lines with at least two tokens, and their token ids."""
    held = lines[-s["heldout_lines"]:]
    encoded = tokenizer(held, add_special_tokens=False)["input_ids"]
    pairs = [(t, i) for t, i in zip(held, encoded) if len(i) >= 2][:s["items"]]
    return [t for t, _ in pairs], [i for _, i in pairs]


def cloned_run(world_dir: Path, work: Path, s: dict, arm: str, *, seed: int, device: str) -> dict:
    """Pre-train one arm on the world's source corpus and score it on the held-out sentences.

    Returns ``{"arm", "pretrain", "layers", "similarity": (items, L + 1) per-sentence cosine by
    layer, "untrained_similarity": the same for the untrained model (50/50 arm only), "nll":
    {"L1", "L2"}: (items,), "unigram_nll": (items,), "ppl": {"L1", "L2"}}``.
    """
    import torch
    import transformers as tf

    from xlt.analysis.similarity import analyze_parallel
    from xlt.demo.transfer import pretrain_lm, tiny_llama, world_info
    from xlt.eval.ppl import sliding_window_perplexity, token_stream
    from xlt.io import read_json
    from xlt.models import load_model, load_tokenizer
    from xlt.pretrain.cloned import LanguageMap

    if arm not in s["arms"]:
        raise ValueError(f"unknown arm {arm!r} (arms: {', '.join(s['arms'])})")
    source = world_info(world_dir)["source_language"]
    lines = (world_dir / "corpus" / f"{source}.txt").read_text(encoding="utf-8").splitlines()
    train_lines = lines[:-s["heldout_lines"]]
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        train_file = work / "train.txt"
        train_file.write_text("\n".join(train_lines) + "\n", encoding="utf-8")
        model_dir = work / "model"
        a = s["arms"][arm]
        summary = pretrain_lm([train_file], world_dir / "tokenizer", model_dir, s, seed=seed, device=device,
                              n_clones=1, p_clone=a["p_clone"], language_names=["L1", "L2"],
                              language_schedule=a["language_schedule"], progress=False)
        tokenizer = load_tokenizer(model_dir)
        model = load_model(model_dir, kind="causal", dtype="float32", device=device)
        model.eval()
        lmap = LanguageMap.from_dict(read_json(model_dir / "languages.json"))
        texts, ids = heldout_items(lines, tokenizer, s)
        eos = tokenizer.eos_token_id

        def similarity(m) -> list[list[float]]:
            inputs = [(lmap.map_ids(torch.tensor(i), "L1").to(device), lmap.map_ids(torch.tensor(i), "L2").to(device))
                      for i in ids]
            return analyze_parallel(m, inputs, mode="position", gradients=False).hidden

        out = {"arm": arm, "pretrain": summary, "layers": model.config.num_hidden_layers,
               "similarity": similarity(model)}
        if arm == "50-50":  # the trained models' initial weights: pretrain_lm seeds the same way
            tf.set_seed(seed)
            untrained = tf.AutoModelForCausalLM.from_config(
                tiny_llama(lmap.model_vocab_size, tokenizer, s["model"], s["seq_len"])).to(device)
            out["untrained_similarity"] = similarity(untrained)
        out["nll"] = {lang: sentence_nll(model, ids, lmap, lang, eos_id=eos) for lang in ("L1", "L2")}
        train_ids = tokenizer(train_lines, add_special_tokens=False)["input_ids"]
        out["unigram_nll"] = unigram_nll(train_ids, ids, len(tokenizer), eos_id=eos)
        stream = token_stream(lines[-s["heldout_lines"]:], tokenizer)
        out["ppl"] = {lang: sliding_window_perplexity(model, lmap.map_ids(stream, lang), context=s["seq_len"],
                                                      last_n=s["seq_len"] // 2, batch_size=32)["ppl"]
                      for lang in ("L1", "L2")}
        out["items"] = len(ids)
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def steps(root: Path, fs: dict, *, device: str, step_class) -> list:
    """One step per run and arm: ``full-cloned-<arm>-w<W>-b<B>-s<S>``, needing only the world."""
    from xlt.demo.full import world_path

    s = fs[KEY]
    out = []
    for u in runs(fs):
        for arm in s["arms"]:
            def run_arm(u=u, arm=arm) -> dict:
                result = cloned_run(world_path(root, u["world"]), root / "models" / f"cloned-{arm}-{u['name']}", s,
                                    arm, seed=u["seed"], device=device)
                return {"unit": u, **result}
            out.append(step_class(step_name(arm, u), f"cloned languages: {arm}, {u['name']}", run_arm,
                                  needs=(f"full-world-w{u['world']}",)))
    return out


# --------------------------------------------------------------------------------------------
# verdicts


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def item_similarity(step: dict, key: str = "similarity") -> list[float]:
    """Per held-out sentence: the mean clone cosine over :func:`middle_layers`."""
    layers = middle_layers(step["layers"])
    return [_mean(row[l] for l in layers) for row in step[key]]


def _steps(fs: dict, results: dict) -> dict | None:
    found = {(arm, u["name"]): results.get(step_name(arm, u)) for u in runs(fs) for arm in fs[KEY]["arms"]}
    return None if any(v is None for v in found.values()) else found


def preconditions(fs: dict, steps_: dict) -> list:
    """Every trained model beats the unigram model on held-out L1 sentences (the worst decides);
    sharing appears: in every run the per-sentence gain of the 50/50 model's clone similarity over
    the untrained model's has a 95 % item-bootstrap interval above 0 (the worst run's low bound
    decides)."""
    from xlt.demo.verdicts import paired_interval, precondition

    (arm, name), worst = max(steps_.items(), key=lambda kv: _mean(kv[1]["nll"]["L1"]) - _mean(kv[1]["unigram_nll"]))
    unigram = precondition(
        "model beats a unigram model", _mean(worst["nll"]["L1"]), _mean(worst["unigram_nll"]),
        higher_is_better=False, scale=1.0, unit="nats",
        text=(f"held-out L1 negative log-likelihood per token (mean over sentences) of the worst model "
              f"({arm}, run {name}) against a unigram model of its training lines"))
    lows = {name: paired_interval([item_similarity(st, "untrained_similarity")], [item_similarity(st)]).low
            for (arm, name), st in steps_.items() if arm == "50-50"}
    name = min(lows, key=lows.get)
    sharing = precondition(
        "sharing appears in the 50/50 run", lows[name], 0.0, scale=1.0, unit="cosine",
        text=(f"low bound of the 95 % interval of the 50/50 model's clone similarity (mean of layers 1..L-1) "
              f"minus the untrained model's, per sentence, worst run ({name})"))
    return [unigram, sharing]


def reproduction(fs: dict, results: dict) -> dict | None:
    """``cloned``: 90/10 against 50/50 on clone similarity (predicted increase); ``cloned
    schedule``: the 0.1_0.9 schedule against 50/50 on held-out NLL in L1 and L2 (predicted
    decrease); None while a step is missing."""
    from xlt.demo.verdicts import reproduce

    steps_ = _steps(fs, results)
    if steps_ is None:
        return None
    names = [u["name"] for u in runs(fs)]
    pre = preconditions(fs, steps_)
    chosen = fs[KEY]["chosen"]
    out = {KEY: reproduce(
        method="90/10", baseline="50/50", metric="clone similarity (cosine, mean of layers 1..L-1, per sentence)",
        prediction="increase", a=[item_similarity(steps_[("50-50", n)]) for n in names],
        b=[item_similarity(steps_[("90-10", n)]) for n in names], preconditions=pre, settings_chosen=chosen,
        scale=1.0, unit="cosine", digits=3)}
    if "schedule" in fs[KEY]["arms"]:
        def nll(step: dict) -> list[float]:
            return step["nll"]["L1"] + step["nll"]["L2"]

        out[f"{KEY} schedule"] = reproduce(
            method=f"schedule {fs[KEY]['arms']['schedule']['language_schedule']}", baseline="50/50",
            metric="held-out NLL per token (nats, L1 and L2 sentences)", prediction="decrease",
            a=[nll(steps_[("50-50", n)]) for n in names], b=[nll(steps_[("schedule", n)]) for n in names],
            preconditions=pre, settings_chosen=chosen, scale=1.0, unit="nats", digits=3)
    return out


# --------------------------------------------------------------------------------------------
# report


def summary_table(fs: dict, results: dict) -> dict:
    """Per arm (and ``untrained``), over the runs that finished: the mean clone similarity by
    layer, and per language the held-out perplexity (mean and sample standard deviation)."""
    from xlt.demo.verdicts import sample_std

    table: dict = {}
    for arm in fs[KEY]["arms"]:
        done = [st for u in runs(fs) if (st := results.get(step_name(arm, u))) is not None]
        if not done:
            continue
        by_layer = [_mean(row[l] for st in done for row in st["similarity"]) for l in range(done[0]["layers"] + 1)]
        ppl = {lang: {"mean": _mean(st["ppl"][lang] for st in done),
                      "std": sample_std([st["ppl"][lang] for st in done])} for lang in ("L1", "L2")}
        table[arm] = {"runs": len(done), "similarity_by_layer": by_layer, "ppl": ppl,
                      "middle_similarity": _mean(_mean(item_similarity(st)) for st in done)}
        if arm == "50-50":
            table["untrained"] = {
                "runs": len(done),
                "similarity_by_layer": [_mean(row[l] for st in done for row in st["untrained_similarity"])
                                        for l in range(done[0]["layers"] + 1)],
                "middle_similarity": _mean(_mean(item_similarity(st, "untrained_similarity")) for st in done)}
    return table


def report(out: Path, fs: dict, results: dict) -> tuple[list[str], dict]:
    """Markdown lines (a table by arm, a plot of similarity by layer) and the JSON summary."""
    from xlt.demo.report import _plot_similarity

    table = summary_table(fs, results)
    lines = ["### Cloned languages (Schäfer et al. 2024)", ""]
    if not table:
        return lines + ["No run has finished."], {"arms": {}}
    layers = len(next(iter(table.values()))["similarity_by_layer"])
    lines.append("| arm | runs | " + " | ".join(f"cos layer {l}" for l in range(layers))
                 + " | ppl L1 | ppl L2 |")
    lines.append("|---|---:|" + "---:|" * (layers + 2))
    for arm, row in table.items():
        ppl = row.get("ppl")
        cells = [f"{v:.3f}" for v in row["similarity_by_layer"]]
        p = [f"{ppl[l]['mean']:.2f}" + (f" ± {ppl[l]['std']:.2f}" if ppl[l]["std"] is not None else "")
             for l in ("L1", "L2")] if ppl else ["—", "—"]
        lines.append(f"| {arm} | {row['runs']} | " + " | ".join(cells + p) + " |")
    lines.append("")
    lines.append(f"Settings: {fs[KEY]['chosen']}")
    if _plot_similarity(out / "full_cloned.png", {arm: row["similarity_by_layer"] for arm, row in table.items()}):
        lines += ["", "![cloned languages: clone similarity by layer](full_cloned.png)"]
    return lines, {"arms": table}
