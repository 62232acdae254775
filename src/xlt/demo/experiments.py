"""Steps 4-6 of the demo: AdaMergeX, LSLo against a shared LoRA, cloned-language pre-training.

Each function runs one seed of one experiment and returns a JSON-ready dict. They compose the
public API (``xlt.merge``, ``xlt.align``, ``xlt.lslo``, ``xlt.pretrain``, ``xlt.eval``,
``xlt.analysis``); the LSLo experiment calls ``xlt.lslo.train`` and ``xlt.eval.mt.evaluate``,
the calls behind ``xlt train lslo`` and ``xlt eval mt``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from xlt.demo.transfer import (CLASSIFICATION_TASK, evaluate_model, pretrain_lm, source_task_examples,
                               train_lora_on_examples, world_info)


# --------------------------------------------------------------------------------------------
# 4. AdaMergeX


def adamergex_experiment(base_dir: Path, world_dir: Path, work: Path, settings: dict, *,
                         seed: int, device: str, progress: bool = True) -> dict:
    """Task LoRA (source-language ``polarity`` data) + reference LoRAs (causal LM on
    ``xlt data reference-lm``-style chunks of each language's corpus) -> AdaMergeX adapter per
    target, t chosen on the tuning target's dev set, compared with the task adapter alone."""
    from xlt.formats import TaskExample, read_records
    from xlt.merge import adamergex, chunk_words, read_adapter
    from xlt.merge.selection import merge_into_base, score_task, select_t
    from xlt.models import load_model, load_tokenizer

    info = world_info(world_dir)
    source = info["source_language"]
    targets = [l["code"] for l in info["languages"] if l["code"] != source]
    s = settings
    task_adapter = work / "task"
    if not (task_adapter / "adapter_config.json").is_file():
        train_lora_on_examples(base_dir, source_task_examples(world_dir, [CLASSIFICATION_TASK]), task_adapter, s,
                               steps=s["task_steps"], seed=seed, device=device, append_eos=True, progress=progress)
    refs = {}
    for k, lang in enumerate([source] + targets):
        lines = (world_dir / "corpus" / f"{lang}.txt").read_text(encoding="utf-8").splitlines()
        lines = lines[:s["ref_lines"]]
        chunks = chunk_words(lines, s["ref_prompt_words"], 1)
        examples = [TaskExample(lang=lang, prompt=p, completion=" " + c) for p, c in chunks.pairs if c.strip()]
        out = work / f"ref-{lang}"
        if not (out / "adapter_config.json").is_file():
            train_lora_on_examples(base_dir, examples, out, s, steps=s["ref_steps"], seed=seed + 100 + k,
                                   device=device, progress=progress)
        refs[lang] = out
    tokenizer = load_tokenizer(base_dir)
    dev = [ex for ex in read_records(world_dir / "tasks" / CLASSIFICATION_TASK / "dev.jsonl", "task")
           if ex.lang == s["tune_language"]][:s["dev_limit"]]
    task_state = read_adapter(task_adapter)

    def merged_model(lang: str, t: float):
        base = load_model(base_dir, kind="causal", dtype="float32", device="cpu")
        state = adamergex(task_state, read_adapter(refs[lang]), read_adapter(refs[source]), t).adapter
        model = merge_into_base(base, state).to(device)
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        return model

    def dev_score(t: float) -> dict:
        model = merged_model(s["tune_language"], t)
        return score_task(model, tokenizer, dev, metric="accuracy", batch_size=64)

    best_t, curve = select_t(s["t_grid"], dev_score)
    base = load_model(base_dir, kind="causal", dtype="float32", device="cpu")
    task_only = merge_into_base(base, task_state).to(device)
    task_only.generation_config.pad_token_id = tokenizer.pad_token_id
    rows = {"task adapter alone": evaluate_model(task_only, tokenizer, world_dir, split="test",
                                                 limit=s["test_limit"], tasks=[CLASSIFICATION_TASK],
                                                 languages=[source] + targets)}
    source_accuracy = rows["task adapter alone"].pop(source)["accuracy"]
    merged = {}
    for lang in targets:
        res = evaluate_model(merged_model(lang, best_t), tokenizer, world_dir, split="test",
                             limit=s["test_limit"], tasks=[CLASSIFICATION_TASK], languages=[lang])
        merged[lang] = res[lang]
    rows["AdaMergeX"] = merged
    return {"best_t": best_t, "t_curve": curve, "source_accuracy": source_accuracy, "tune_language": s["tune_language"],
            "accuracy": {name: {lang: r[lang]["accuracy"] for lang in targets} for name, r in rows.items()}}


# --------------------------------------------------------------------------------------------
# 5. LSLo against one shared LoRA of the same parameter count


def lslo_experiment(world_dir: Path, work: Path, settings: dict, *, seed: int, device: str) -> dict:
    """A tiny M2M-100 (NLLB-style tokenizer with the world's codes) pre-trained on the
    source-centric directions, then LSLo and a shared LoRA (``xlt.lslo.train``, as ``xlt train
    lslo [--shared]``) on every direction, scored by ``xlt.eval.mt.evaluate`` (chrF per direction)."""
    from xlt.eval.mt import evaluate, make_metrics
    from xlt.formats import read_records, write_jsonl
    from xlt.lslo import LSLoDataArguments
    from xlt.lslo.config import parse_mapping
    from xlt.lslo.trainer import LSLoTrainingConfig
    from xlt.testing import save_tiny_model, train_nllb_tokenizer

    info = world_info(world_dir)
    source = info["source_language"]
    langs = [l["code"] for l in info["languages"]]
    s = settings
    work.mkdir(parents=True, exist_ok=True)
    corpus = []
    for lang in langs:
        corpus += (world_dir / "corpus" / f"{lang}.txt").read_text(encoding="utf-8").splitlines()[:1500]
    tokenizer = train_nllb_tokenizer(langs, corpus, vocab_size=1000)
    random_dir = work / "random"
    save_tiny_model("m2m100", random_dir, tokenizer=tokenizer, hidden_size=s["hidden"], num_layers=s["layers"],
                    intermediate_size=2 * s["hidden"], max_positions=128, seed=seed)
    train_pairs = read_records(world_dir / "translation" / "train.jsonl", "parallel")
    write_jsonl(work / "centric.jsonl", [p for p in train_pairs if source in (p.src_lang, p.tgt_lang)], overwrite=True)
    test = read_records(world_dir / "translation" / "test.jsonl", "parallel")
    seen: dict = {}
    test = [p for p in test if seen.setdefault((p.src_lang, p.tgt_lang), []).append(p) or
            len(seen[(p.src_lang, p.tgt_lang)]) <= s["test_per_direction"]]
    tiers = [f"{source}=high"] + [f"{l}=low" for l in langs if l != source]
    common = dict(disable_tqdm=True, logging_steps=50.0, save_strategy="no", report_to="none",
                  per_device_train_batch_size=s["batch_size"], max_source_length=48, max_target_length=48,
                  seed=seed, use_cpu=device == "cpu")
    base = work / "base"
    _train_lslo(LSLoTrainingConfig(output_dir=str(base), full_finetune=True, max_steps=s["base_steps"],
                                          learning_rate=3e-3, lr_scheduler_type="linear", warmup_steps=20.0,
                                          **common),
                LSLoDataArguments(model=str(random_dir), train_file=str(work / "centric.jsonl"),
                                  overwrite=True))
    data = LSLoDataArguments(model=str(base), train_file=str(world_dir / "translation" / "train.jsonl"),
                             overwrite=True)
    lslo_common = dict(tiers=tiers, max_steps=s["steps"], learning_rate=3e-3, lr_scheduler_type="constant",
                       warmup_steps=0.0, **common)
    _train_lslo(LSLoTrainingConfig(output_dir=str(work / "lslo"), **lslo_common), data)
    _train_lslo(LSLoTrainingConfig(output_dir=str(work / "shared"), shared=True, **lslo_common), data)
    evaluation = evaluate(test, {"base": base, "lslo": work / "lslo", "shared": work / "shared"},
                          metrics=make_metrics(), tiers=parse_mapping(tiers, name="tiers"), device=device,
                          num_beams=s["num_beams"], max_new_tokens=40, batch_size=64, progress=False,
                          # the world's languages are artificial: no language identifier knows them
                          wrong_language="off")
    chrf = {name: {f"{src}-{tgt}": value for (src, tgt), value in sorted(scores.items())}
            for name, scores in sorted(evaluation.scores("chrf").items())}
    shutil.rmtree(random_dir, ignore_errors=True)
    return {"chrf": chrf, "tiers": tiers}


def _train_lslo(config, data) -> None:
    """``xlt.lslo.train`` without console output; a run stopped by a signal is an error."""
    from xlt.errors import XltError
    from xlt.lslo import train
    from xlt.training import stop_signal

    trainer = train(config, data, progress=False)
    if stop_signal(trainer) is not None:
        raise XltError(f"LSLo training into {config.output_dir} was stopped by a signal")


# --------------------------------------------------------------------------------------------
# 6. cloned languages at 50/50 and 90/10


def cloned_experiment(world_dir: Path, work: Path, settings: dict, *, share: float, seed: int, device: str,
                      progress: bool = True) -> dict:
    """Pre-train on the source corpus with one clone getting ``1 - share`` of the sequences;
    per-language perplexity on held-out source text and layer-wise similarity of a sentence and
    its clone (``xlt pretrain``, ``xlt eval ppl``, ``xlt analyze similarity``)."""
    import torch

    from xlt.analysis.similarity import analyze_parallel
    from xlt.eval.ppl import sliding_window_perplexity, token_stream
    from xlt.io import read_json
    from xlt.models import load_model, load_tokenizer
    from xlt.pretrain.cloned import LanguageMap

    info = world_info(world_dir)
    source = info["source_language"]
    s = settings
    lines = (world_dir / "corpus" / f"{source}.txt").read_text(encoding="utf-8").splitlines()
    held_out = lines[-s["heldout_lines"]:]
    train_file = work / "train.txt"
    work.mkdir(parents=True, exist_ok=True)
    train_file.write_text("\n".join(lines[:-s["heldout_lines"]]) + "\n", encoding="utf-8")
    model_dir = work / "model"
    summary = pretrain_lm([train_file], world_dir / "tokenizer", model_dir, s, seed=seed, device=device,
                          n_clones=1, p_clone=1 - share, language_names=["L1", "L2"], progress=progress)
    model = load_model(model_dir, kind="causal", dtype="float32", device=device)
    tokenizer = load_tokenizer(model_dir)
    lmap = LanguageMap.from_dict(read_json(model_dir / "languages.json"))
    stream = token_stream(held_out, tokenizer)
    ppl = {}
    for name in lmap.names:
        ids = lmap.map_ids(stream, name)
        ppl[name] = sliding_window_perplexity(model, ids.to(device), context=s["seq_len"],
                                              last_n=s["seq_len"] // 2, batch_size=32)["ppl"]
    texts = held_out[:s["similarity_inputs"]]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    inputs = [(lmap.map_ids(torch.tensor(ids), "L1").to(device), lmap.map_ids(torch.tensor(ids), "L2").to(device))
              for ids in encoded if len(ids) >= 2]
    sim = analyze_parallel(model, inputs, mode="position", gradients=False)
    means = sim.layer_means()
    shutil.rmtree(model_dir, ignore_errors=True)
    train_file.unlink(missing_ok=True)
    return {"share_L1": share, "perplexity": ppl, "similarity_by_layer": means["hidden_cos"],
            "cka_by_layer": means["cka"], "pretrain": summary}
