"""Bad input to every ``xlt`` subcommand: one clear line, non-zero exit, nothing left behind.

Each row of :data:`CASES` is a command line with one broken input (placeholders name files of
the shared workspace, ``{out}`` the command's output location) and the words the error line must
contain: the input it concerns (file, field or option) and what is wrong with it. Most rows run
in-process through :func:`xlt.cli.main` (the code path of the console script, without paying the
imports again per row); a few run through the real ``xlt`` executable in a subprocess.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from _reliability_helpers import build_workspace, listing

# (id, argv with {placeholders}, [substrings the one error line must contain, case-insensitive])
CASES: list[tuple[str, str, list[str]]] = [
    # --- synth
    ("synth-zero-languages", "synth --out {out} --languages 0", ["languages", "0"]),
    ("synth-share-above-one", "synth --out {out} --anchor-share 1.5", ["anchor", "1.5"]),
    ("synth-shares-length", "synth --out {out} --languages 3 --corpus-shares 0.9,0.1", ["corpus_shares", "per language"]),
    ("synth-bad-word-order", "synth --out {out} --word-orders SVO,XYZ", ["XYZ"]),
    ("synth-zero-instructions", "synth --out {out} --instructions 0", ["--instructions", "0"]),
    ("synth-seed-not-int", "synth --out {out} --seed abc", ["--seed", "abc"]),
    ("synth-negative-vocab", "synth --out {out} --vocab-size -5", ["vocab", "-5"]),
    ("synth-nan-share", "synth --out {out} --negation-share nan", ["negation", "nan"]),
    # --- pretrain
    ("pretrain-missing-corpus", "pretrain --output_dir {out} --corpus {missing} --tokenizer {model} --max_steps 2",
     ["does_not_exist"]),
    ("pretrain-p-clone-above-one", "pretrain --output_dir {out} --corpus {corpus} --tokenizer {model} "
     "--n_clones 2 --p_clone 2.0 --max_steps 2", ["p_clone", "2.0"]),
    ("pretrain-zero-seq-len", "pretrain --output_dir {out} --corpus {corpus} --tokenizer {model} --seq_len 0 "
     "--max_steps 2", ["seq_len"]),
    ("pretrain-bad-schedule", "pretrain --output_dir {out} --corpus {corpus} --tokenizer {model} "
     "--n_clones 2 --language_schedule abc --max_steps 2", ["schedule", "abc"]),
    ("pretrain-corpus-too-short", "pretrain --output_dir {out} --corpus {corpus} --tokenizer {model} --max_steps 2 --preset tiny",
     ["corpus.txt", "fewer than one training window"]),
    ("pretrain-latin1-corpus", "pretrain --output_dir {out} --corpus {latin1_txt} --tokenizer {model} --max_steps 2",
     ["latin1.txt", "utf-8"]),
    # --- train sft / mid-align / afp
    ("sft-missing-train-file", "train sft --model {model} --train_file {missing} --output_dir {out}",
     ["does_not_exist"]),
    ("sft-train-file-is-dir", "train sft --model {model} --train_file {dir} --output_dir {out}",
     ["a_directory", "directory"]),
    ("sft-malformed-json", "train sft --model {model} --train_file {malformed} --output_dir {out}",
     ["malformed.jsonl:2", "json"]),
    ("sft-wrong-type", "train sft --model {model} --train_file {wrong_type} --output_dir {out}",
     ["wrong_type.jsonl:2", "prompt"]),
    ("sft-empty-prompt", "train sft --model {model} --train_file {empty_prompt} --output_dir {out}",
     ["empty_prompt.jsonl:2", "prompt"]),
    ("sft-latin1", "train sft --model {model} --train_file {latin1} --output_dir {out}",
     ["latin1.jsonl", "utf-8"]),
    ("sft-empty-file", "train sft --model {model} --train_file {empty} --output_dir {out}", ["empty.jsonl"]),
    ("sft-unknown-lang", "train sft --model {model} --train_file {unknown_lang} --output_dir {out}",
     ["unknown_lang.jsonl:2", "lang"]),
    ("sft-negative-batch", "train sft --model {model} --train_file {task} --output_dir {out} "
     "--per_device_train_batch_size -1", ["batch_size", "-1"]),
    ("sft-nan-lr", "train sft --model {model} --train_file {task} --output_dir {out} --learning_rate nan",
     ["learning_rate", "nan"]),
    ("sft-missing-model", "train sft --model {missing} --train_file {task} --output_dir {out}", ["does_not_exist"]),
    ("sft-bad-yaml", "train sft --model {model} --config {bad_yaml} --output_dir {out}", ["bad.yaml", "yaml"]),
    ("sft-zero-rank", "train sft --model {model} --train_file {task} --output_dir {out} --lora_r 0",
     ["lora_r", "0"]),
    ("mid-align-nan-temperature", "train mid-align --model {model} --train_file {task} --parallel_file {pairs} "
     "--output_dir {out} --alignment_temperature nan", ["temperature", "nan"]),
    ("mid-align-layer-out-of-range", "train mid-align --model {model} --train_file {task} --parallel_file {pairs} "
     "--output_dir {out} --alignment_layer 99", ["alignment layer 99", "outside"]),
    ("mid-align-pairs-empty-text", "train mid-align --model {model} --train_file {task} "
     "--parallel_file {pairs_empty} --output_dir {out}", ["pairs_empty.jsonl:2", "src"]),
    ("afp-pairs-malformed", "train afp --model {model} --train_file {task} --parallel_file {pairs_malformed} "
     "--output_dir {out}", ["pairs_malformed.jsonl", "json"]),
    ("afp-negative-weight", "train afp --model {model} --train_file {task} --parallel_file {pairs} "
     "--output_dir {out} --alignment_weight -1", ["alignment_weight", "-1"]),
    # --- train lslo
    ("lslo-pairs-wrong-type", "train lslo --model {m2m} --train_file {pairs_wrong_type} --output_dir {out}",
     ["pairs_wrong_type.jsonl:2", "tgt"]),
    ("lslo-pruning-ratio-above-one", "train lslo --model {m2m} --train_file {nllb_pairs} --output_dir {out} "
     "--pruning layer --target_pruning_ratio 1.5", ["pruning ratio", "1.5"]),
    ("lslo-nan-sampling-temperature", "train lslo --model {m2m} --train_file {nllb_pairs} --output_dir {out} "
     "--sampling_temperature nan", ["sampling_temperature", "nan"]),
    ("lslo-unknown-direction", "train lslo --model {m2m} --train_file {nllb_pairs} --output_dir {out} "
     "--directions eng_Latn-zzz", ["eng_Latn-zzz"]),
    # --- data afp / reference-lm
    ("data-afp-p-above-one", "data afp --task-file {task} --parallel-file {pairs} -o {out} -x 1.5",
     ["1.5"]),
    ("data-afp-latin1", "data afp --task-file {latin1} --parallel-file {pairs} -o {out}", ["latin1.jsonl", "utf-8"]),
    ("data-afp-names-malformed", "data afp --task-file {task} --parallel-file {pairs} -o {out} "
     "--language-names {bad_json}", ["bad.json", "json"]),
    ("data-afp-negative-repeat", "data afp --task-file {task} --parallel-file {pairs} -o {out} -r -2",
     ["repeat", "-2"]),
    ("reference-lm-missing", "data reference-lm --input {missing} --lang qaa --out {out}", ["does_not_exist"]),
    ("reference-lm-dir", "data reference-lm --input {dir} --lang qaa --out {out}", ["a_directory"]),
    ("reference-lm-negative-units", "data reference-lm --input {corpus} --lang qaa --out {out} "
     "--prompt-units -1", ["prompt", "-1"]),
    ("reference-lm-empty-lang", "data reference-lm --input {corpus} --lang= --out {out}", ["--lang"]),
    # --- merge
    ("adamergex-nan-t", "merge adamergex --task {lora_a} --ref-target {lora_b} --ref-source {lora_b} --t nan "
     "--out {out}", ["--t", "nan"]),
    ("adamergex-missing-task", "merge adamergex --task {missing} --ref-target {lora_b} --ref-source {lora_b} "
     "--t 1 --out {out}", ["does_not_exist"]),
    ("adamergex-mismatched-targets", "merge adamergex --task {lora_a} --ref-target {lora_other} "
     "--ref-source {lora_b} --t 1 --out {out}", ["target modules differ"]),
    ("adamergex-wrong-shape", "merge adamergex --task {lora_a} --ref-target {lora_bad_shape} "
     "--ref-source {lora_b} --t 1 --out {out}", ["lora_bad_shape", "shape"]),
    ("adamergex-pickle-adapter", "merge adamergex --task {lora_a} --ref-target {lora_b} "
     "--ref-source {lora_pickle} --t 1 --out {out}", ["lora_pickle", "pickle"]),
    ("adamergex-broken-config", "merge adamergex --task {lora_broken_config} --ref-target {lora_b} "
     "--ref-source {lora_b} --t 1 --out {out}", ["adapter_config.json", "json"]),
    ("adamergex-nan-weights", "merge adamergex --task {lora_nan} --ref-target {lora_b} --ref-source {lora_a} "
     "--t 1 --out {out}", ["lora_nan", "nan"]),
    ("linear-weights-count", "merge linear --adapters {lora_a} {lora_b} --weights 0.5 --out {out}",
     ["--weights"]),
    ("linear-negative-rank", "merge linear --adapters {lora_a} {lora_b} --out {out} --rank -1", ["rank", "-1"]),
    ("linear-dir-is-file", "merge linear --adapters {lora_a} {task} --out {out}", ["task.jsonl"]),
    ("task-arithmetic-nan-lambda", "merge task-arithmetic --adapters {lora_a} {lora_b} --out {out} --lambda nan",
     ["lambda", "nan"]),
    ("task-arithmetic-lora-and-ia3", "merge task-arithmetic --adapters {lora_a} {ia3} --out {out}", ["ia3"]),
    ("language-arithmetic-nan-lambda", "merge language-arithmetic --task {lora_a} --target-language {lora_b} "
     "--source-language {lora_b} --lambda nan --out {out}", ["lambda", "nan"]),
    ("layer-swap-zones-exceed-model", "merge layer-swap --task-expert {model} --language-expert {model} "
     "--bottom 50 --top 1 --out {out}", ["--bottom 50", "exceed"]),
    ("layer-swap-model-and-adapter", "merge layer-swap --task-expert {model} --language-expert {lora_a} "
     "--bottom 1 --top 1 --out {out}", ["lora_a", "adapter"]),
    # --- eval
    ("icl-missing-test", "eval icl --model {model} --test {missing} --output {out}", ["does_not_exist"]),
    ("icl-negative-shots", "eval icl --model {model} --test {choice} --shots -1 --output {out}", ["--shots", ">= 0"]),
    ("icl-unknown-language", "eval icl --model {model} --test {choice} --languages zzz --output {out}", ["zzz"]),
    ("icl-label-out-of-range", "eval icl --model {model} --test {choice_bad_label} --output {out}",
     ["choice_bad_label.jsonl:2", "label"]),
    ("task-malformed", "eval task --model {model} --data {malformed} --output {out}", ["malformed.jsonl:2"]),
    ("task-zero-batch", "eval task --model {model} --data {task} --batch-size 0 --output {out}",
     ["batch-size", "0"]),
    ("mt-latin1", "eval mt --data {latin1} --model {model} --out {out}", ["latin1.jsonl", "utf-8"]),
    ("mt-unknown-direction", "eval mt --data {pairs} --model {model} --directions qaa-zzz --out {out}",
     ["qaa-zzz"]),
    ("mt-zero-beams", "eval mt --data {pairs} --model {model} --num-beams 0 --out {out}", ["beams", "0"]),
    ("ppl-missing-corpus", "eval ppl --model {model} --corpus {missing} --output {out}", ["does_not_exist"]),
    ("ppl-negative-stride", "eval ppl --model {model} --corpus {corpus} --stride -1 --output {out}",
     ["stride", "-1"]),
    ("ppl-latin1", "eval ppl --model {model} --corpus {latin1_txt} --output {out}", ["latin1.txt", "utf-8"]),
    ("suite-task-without-data", "eval suite --model {model} --tasks xnli --languages en --out {out}",
     ["xnli", "--data"]),
    ("suite-script-only-hub-dataset", "eval suite --model {model} --tasks mgsm --languages en "
     "--data mgsm=hf:{script_dataset} --out {out}", ["mgsm", "mgsm.py", "loading script"]),
    ("compare-not-a-suite-run", "eval compare {missing} {model} --out {out}", ["does_not_exist", "results.json"]),
    ("lm-eval-missing-model", "eval lm-eval --model {missing} --tasks arc_easy --output {out}",
     ["does_not_exist"]),
    ("lm-eval-negative-fewshot", "eval lm-eval --model {model} --tasks arc_easy --num-fewshot -1 --output {out}",
     ["fewshot", "-1"]),
    # --- analyze, lslo export
    ("similarity-pairs-malformed", "analyze similarity --model {model} --pairs {pairs_malformed} "
     "--output_dir {out}", ["pairs_malformed.jsonl"]),
    ("similarity-unknown-languages", "analyze similarity --model {model} --pairs {pairs} --languages qaa zzz "
     "--output_dir {out}", ["zzz"]),
    ("similarity-negative-inputs", "analyze similarity --model {model} --pairs {pairs} --n_inputs -3 "
     "--output_dir {out}", ["n_inputs", "-3"]),
    ("similarity-labels-count", "analyze similarity --model {model} --label a b --pairs {pairs} "
     "--output_dir {out}", ["--label"]),
    ("lens-prompts-without-prompt", "analyze lens --model {model} --prompts {pairs} --out {out}",
     ["field 'prompt'"]),
    ("lens-zero-batch", "analyze lens --model {model} --prompts {pairs} --batch-size 0 --out {out}",
     ["--batch-size", "0"]),
    ("lens-tuned-missing-translator", "analyze lens --model {model} --prompts {lens_prompts} "
     "--tuned-lens {tuned_missing} --out {out}", ["tuned_missing/params.safetensors", "field '1.bias'", "missing"]),
    ("lens-tuned-width", "analyze lens --model {model} --prompts {lens_prompts} --tuned-lens {tuned_narrow} "
     "--out {out}", ["tuned_narrow/params.safetensors", "field '0.weight'", "hidden width"]),
    ("lens-tuned-layer-count", "analyze lens --model {model} --prompts {lens_prompts} --tuned-lens {tuned_short} "
     "--out {out}", ["tuned_short/params.safetensors", "translators", "layers"]),
    ("lens-tuned-pickle", "analyze lens --model {model} --prompts {lens_prompts} --tuned-lens {tuned_pickle} "
     "--out {out}", ["tuned_pickle/params.pt", "--allow-pickle"]),
    ("lens-tuned-pickle-allowed", "analyze lens --model {model} --prompts {lens_prompts} --tuned-lens {tuned_pickle} "
     "--allow-pickle --out {out}", ["tuned_pickle/params.pt", "plain tensors"]),
    ("neurons-missing-corpus", "analyze neurons --model {model} --corpus en={corpus} de={missing} --out {out}",
     ["does_not_exist", "no such corpus file"]),
    ("neurons-corpus-without-lang", "analyze neurons --model {model} --corpus en={corpus} {corpus} --out {out}",
     ["--corpus", "LANG=FILE"]),
    ("neurons-latin1-corpus", "analyze neurons --model {model} --corpus en={corpus} de={latin1_txt} --out {out}",
     ["latin1.txt", "utf-8"]),
    ("neurons-lape-quantile-zero", "analyze neurons --model {model} --corpus en={corpus} de={corpus} "
     "--lape-quantile 0 --out {out}", ["--lape-quantile", "0"]),
    ("lslo-export-missing", "lslo export --adapter {missing} --src qaa --tgt qab --out {out}", ["does_not_exist"]),
    ("lslo-export-not-lslo", "lslo export --adapter {lora_a} --src qaa --tgt qab --out {out}", ["lora_a"]),
    # --- demo
    ("demo-zero-seeds", "demo --quick --out {out} --seeds 0", ["--seeds", "0"]),
    ("demo-negative-threads", "demo --quick --out {out} --threads -2", ["--threads", "-2"]),
    ("demo-zero-jobs", "demo --out {out} --jobs 0", ["--jobs", "0"]),
    ("demo-unknown-device", "demo --quick --out {out} --device tpu", ["--device", "tpu"]),
    # --- the dispatcher itself
    ("unknown-command", "merge tie --out {out}", ["tie"]),
]

#: rows also run through the real executable in a subprocess
SUBPROCESS = {"synth-share-above-one", "sft-malformed-json", "adamergex-pickle-adapter",
              "mt-unknown-direction", "reference-lm-dir"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_llama_dir, tiny_model_dir):
    return build_workspace(tmp_path_factory.mktemp("bad-input-ws"), Path(tiny_llama_dir),
                           m2m_dir=Path(tiny_model_dir("m2m100")))


def _argv(template: str, ws: dict[str, str], out: Path) -> list[str]:
    return [part.format(out=out, **ws) for part in template.split()]


def _check(case_id: str, status: int, stderr: str, expect: list[str], before: dict, after: dict, ws) -> None:
    assert status != 0, f"{case_id}: exit status 0"
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, f"{case_id}: traceback\n{stderr}"
    assert len(lines) == 1, f"{case_id}: expected one line on stderr, got\n{stderr}"
    line = lines[0]
    assert line.startswith("xlt: error: "), line
    assert "--debug" not in line, f"{case_id}: reported as a bug: {line}"
    for word in expect:
        assert word.lower() in line.lower(), f"{case_id}: {word!r} not in {line!r}"
    assert after == before, f"{case_id}: something was left behind"
    assert not Path(ws["pwned_marker"]).exists(), "a crafted pickle was executed"


def test_the_table_covers_every_command():
    from xlt.cli import COMMANDS

    names = set()
    for name, entry in COMMANDS.items():
        names |= {f"{name} {sub}" for sub in entry} if isinstance(entry, dict) else {name}
    covered = {" ".join(t.split()[:2]) if t.split()[0] in ("train", "data", "merge", "eval", "analyze", "lslo")
               else t.split()[0] for _, t, _ in CASES}
    import importlib.util

    absent = {name for name, entry in COMMANDS.items() if not isinstance(entry, dict)
              and importlib.util.find_spec(entry[0].partition(":")[0]) is None}
    missing = names - covered - absent  # a command whose module is not in this build has no row
    assert not missing, f"commands without a bad-input row: {sorted(missing)}"
    assert len(CASES) >= 40


@pytest.mark.parametrize("case_id,template,expect", CASES, ids=[c[0] for c in CASES])
def test_bad_input_in_process(case_id, template, expect, workspace, tmp_path, capsys):
    from xlt.cli import main

    out_parent = tmp_path / "out"
    out_parent.mkdir()
    # a missing parent directory, too: a failed command must not leave it behind either
    out = out_parent / "missing-parent" / "result"
    before = {"out": listing(out_parent), "ws": listing(workspace["root"])}
    capsys.readouterr()
    status = main(_argv(template, workspace, out))
    captured = capsys.readouterr()
    after = {"out": listing(out_parent), "ws": listing(workspace["root"])}
    _check(case_id, status, captured.err, expect, before, after, workspace)


@pytest.mark.slow
@pytest.mark.parametrize("case_id,template,expect", [c for c in CASES if c[0] in SUBPROCESS],
                         ids=sorted(SUBPROCESS, key=[c[0] for c in CASES].index))
def test_bad_input_through_the_executable(case_id, template, expect, workspace, tmp_path, xlt_cli):
    out_parent = tmp_path / "out"
    out_parent.mkdir()
    out = out_parent / "result"
    before = {"out": listing(out_parent), "ws": listing(workspace["root"])}
    done = xlt_cli(*_argv(template, workspace, out))
    after = {"out": listing(out_parent), "ws": listing(workspace["root"])}
    _check(case_id, done.returncode, done.stderr, expect, before, after, workspace)
    assert done.returncode == 2


def test_existing_output_is_kept_without_overwrite(workspace, tmp_path, capsys):
    from xlt.cli import main

    for template in ("merge linear --adapters {lora_a} {lora_b} --out {out}",
                     "data reference-lm --input {corpus} --lang qaa --out {out}",
                     "synth --out {out} --languages 2"):
        out = tmp_path / f"existing-{len(os.listdir(tmp_path))}"
        out.mkdir()
        (out / "keep.txt").write_text("old", encoding="utf-8")
        status = main(_argv(template, workspace, out))
        err = capsys.readouterr().err
        assert status == 2 and "--overwrite" in err, err
        assert listing(out) == ["keep.txt"] and (out / "keep.txt").read_text() == "old"
        assert sorted(os.listdir(out.parent)) == sorted(p.name for p in out.parent.iterdir()
                                                        if not p.name.startswith("."))


def test_debug_shows_the_traceback(workspace, tmp_path):
    from xlt.cli import main
    from xlt.errors import XltError

    with pytest.raises(XltError):
        main(["--debug", *_argv("merge linear --adapters {lora_a} {lora_b} --weights 0.5 --out {out}",
                                workspace, tmp_path / "o")])
