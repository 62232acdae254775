"""``--prompts lm-eval``: the five AFP tasks built as lm-evaluation-harness builds them.

The harness's own task files (its xnli_*, paws_*, xcopa_*, xstorycloze_*, xwinograd_*) are
loaded offline by its task manager, pointed at the same local rows, and their requests
(context and continuation per choice, demonstrations drawn per item) compared string for
string with the requests xlt builds; the per-choice log-likelihoods of a tiny model are
compared with the harness's own; and a request longer than the model's context is truncated
as the harness's ``HFLM.loglikelihood`` truncates it.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

lm_eval = pytest.importorskip("lm_eval")

XNLI_TRAIN = [
    {"premise": "Der Hund schläft im Garten.", "hypothesis": "Ein Tier ruht.", "label": 0},
    {"premise": "Sie kaufte drei Äpfel", "hypothesis": "Sie kaufte Obst.", "label": 0},
    {"premise": "Das Konzert fiel aus.", "hypothesis": "Die Band spielte lange.", "label": 2},
    {"premise": "Er wohnt in Berlin.", "hypothesis": "Er mag Katzen.", "label": 1},
    {"premise": "Es regnet seit Montag.", "hypothesis": "Die Straßen sind nass.", "label": 1},
]
XNLI_TEST = [
    {"premise": "Der Zug kam spät an.", "hypothesis": "Der Zug war pünktlich.", "label": 2},
    {"premise": "Anna liest ein Buch.", "hypothesis": "Anna liest.", "label": 0},
    {"premise": "Die Tür ist offen.", "hypothesis": "Jemand ist zu Hause.", "label": 1},
]
XCOPA_VALIDATION = [
    {"premise": "The man turned on the faucet.", "choice1": "The toilet filled with water.",
     "choice2": "Water flowed from the spout.", "question": "effect", "label": 1, "idx": 1, "changed": False},
    {"premise": "The girl found a bug in her cereal. ", "choice1": "She poured milk in the bowl.",
     "choice2": "She lost her appetite.", "question": "effect", "label": 1, "idx": 2, "changed": False},
    {"premise": "The sun rose.", "choice1": "It was morning.", "choice2": "It was midnight.",
     "question": "cause", "label": 0, "idx": 3, "changed": False},
    {"premise": "My body cast a shadow over the grass.", "choice1": "The sun was rising.",
     "choice2": "The grass was cut.", "question": "cause", "label": 0, "idx": 4, "changed": False},
]
XCOPA_TEST = [
    {"premise": "The woman tolerated her friend's difficult behavior.", "choice1": "The woman knew her friend "
     "was going through a hard time.", "choice2": "The woman felt that her friend took advantage of her kindness.",
     "question": "cause", "label": 0, "idx": 1, "changed": False},
    {"premise": "The children got frightened.", "choice1": "The teacher smiled.", "choice2": "Ötzi roared.",
     "question": "cause", "label": 1, "idx": 2, "changed": False},
]
PAWSX_TRAIN = [
    {"id": 1, "sentence1": "The town is n't far from the river .", "sentence2": "The river is near the town.",
     "label": 1},
    {"id": 2, "sentence1": "He left ( early ) , as planned;", "sentence2": "He stayed late.", "label": 0},
    {"id": 3, "sentence1": "", "sentence2": "An empty first sentence.", "label": 0},
    {"id": 4, "sentence1": "She said \" hello \" twice.", "sentence2": "She greeted twice.", "label": 1},
]
PAWSX_TEST = [
    {"id": 5, "sentence1": "It 's the band 's first album.", "sentence2": "This is the band's debut album.",
     "label": 1},
    {"id": 6, "sentence1": "The film was shot in Paris ,", "sentence2": "  Paris was never seen in it.", "label": 0},
    {"id": 7, "sentence1": "No second sentence here.", "sentence2": "", "label": 0},
]
STORY_TRAIN = [
    {"story_id": f"t{k}", "input_sentence_1": f"Tom woke up at {k}.", "input_sentence_2": "He was hungry.",
     "input_sentence_3": "He opened the fridge.", "input_sentence_4": "It was empty.",
     "sentence_quiz1": "Tom went shopping.", "sentence_quiz2": "Tom ate a sandwich.", "answer_right_ending": 1 + k % 2}
    for k in range(4)]
STORY_EVAL = [
    {"story_id": "e1", "input_sentence_1": "Mia planted seeds.", "input_sentence_2": "She watered them daily.",
     "input_sentence_3": "Weeks passed.", "input_sentence_4": "Green shoots appeared.",
     "sentence_quiz1": "Mia was happy.", "sentence_quiz2": "Mia sold her house.", "answer_right_ending": 1},
    {"story_id": "e2", "input_sentence_1": "Sam lost his keys.", "input_sentence_2": "He searched everywhere.",
     "input_sentence_3": "He checked his coat.", "input_sentence_4": "They were in the pocket.",
     "sentence_quiz1": "Sam cried for hours.", "sentence_quiz2": "Sam laughed in relief.", "answer_right_ending": 2},
]
WINOGRAD = [
    {"sentence": "The trophy didn't fit in the suitcase because _ was too big.", "option1": "the trophy",
     "option2": "the suitcase", "answer": "1"},
    {"sentence": "The man couldn't lift his son because _ was so weak.", "option1": "the man",
     "option2": "the son", "answer": "1"},
    {"sentence": "The cat chased the mouse until _ hid.", "option1": "the cat", "option2": "the mouse",
     "answer": "2"},
    {"sentence": "Anna thanked Maria because _  had helped her. ", "option1": "Anna", "option2": "Maria",
     "answer": "2"},
]

#: task -> (the harness's task file, its splits: {split: rows}, the split it scores, the split
#: its demonstrations come from, xlt's prompt language)
CASES = {
    "xnli_de": ("xnli/xnli_de.yaml", {"train": XNLI_TRAIN, "validation": XNLI_TEST}, "validation", "train", "de"),
    "xnli_zh": ("xnli/xnli_zh.yaml", {"train": XNLI_TRAIN, "validation": XNLI_TEST}, "validation", "train", "zh"),
    "xcopa_zh": ("xcopa/default_zh.yaml", {"validation": XCOPA_VALIDATION, "test": XCOPA_TEST}, "test",
                 "validation", "zh"),
    "xcopa_tr": ("xcopa/default_tr.yaml", {"validation": XCOPA_VALIDATION, "test": XCOPA_TEST}, "test",
                 "validation", "tr"),
    "paws_en": ("paws-x/paws_en.yaml", {"train": PAWSX_TRAIN, "validation": PAWSX_TEST, "test": PAWSX_TEST},
                "test", "train", "en"),
    "paws_zh": ("paws-x/paws_zh.yaml", {"train": PAWSX_TRAIN, "validation": PAWSX_TEST, "test": PAWSX_TEST},
                "test", "train", "zh"),
    "xstorycloze_en": ("xstorycloze/default_en.yaml", {"train": STORY_TRAIN, "eval": STORY_EVAL}, "eval", "train",
                       "en"),
    "xwinograd_en": ("xwinograd/xwinograd_en.yaml", {"test": WINOGRAD}, "test", "test", "en"),
}
XLT_TASK = {"xnli": "xnli", "xcopa": "xcopa", "paws": "pawsx", "xstorycloze": "xstorycloze",
            "xwinograd": "xwinograd"}


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _offline_datasets(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def _local_task(case: str, tmp_path: Path, local: Path | None = None) -> tuple[str, Path]:
    """A task file (in ``local``, default ``tmp_path / "tasks"``) that includes the harness's own
    one and reads the case's rows from disk."""
    task_file, splits, _, _, _ = CASES[case]
    tasks_dir = Path(lm_eval.__file__).parent / "tasks"
    files = {split: write_jsonl(tmp_path / "data" / f"{split}.jsonl", rows) for split, rows in splits.items()}
    name = f"xlt_local_{case}"
    local = local or tmp_path / "tasks"
    local.mkdir(exist_ok=True)
    data_files = "".join(f"    {split}: {path}\n" for split, path in files.items())
    (local / f"{name}.yaml").write_text(
        f"include: {tasks_dir / task_file}\ntask: {name}\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n{data_files}", encoding="utf-8")
    return name, local


@pytest.fixture(scope="module")
def harness_manager(tmp_path_factory):
    """One harness ``TaskManager`` over every case's local task file (indexing the harness's
    task folder takes seconds, so it is done once for the module)."""
    from lm_eval.tasks import TaskManager

    root = tmp_path_factory.mktemp("harness-tasks")
    for case in CASES:
        _local_task(case, root / case, root / "tasks")
    return TaskManager(include_path=[str(root / "tasks")])


def harness_requests(case: str, manager, shots: int, seed: int) -> list[list[tuple[str, str]]]:
    """Per scored document, the (context, continuation) of each choice, as the harness builds them."""
    name = f"xlt_local_{case}"
    task = manager.load([name])["tasks"][name] if hasattr(manager, "load") else None
    if task is None:  # pragma: no cover - older harness
        from lm_eval.tasks import get_task_dict

        task = get_task_dict([name], manager)[name]
    task.set_config(key="num_fewshot", value=shots)
    task.set_fewshot_seed(seed)
    task.build_all_requests()
    docs: dict[int, list[tuple[str, str]]] = {}
    for instance in sorted(task.instances, key=lambda i: (i.doc_id, i.idx)):
        docs.setdefault(instance.doc_id, []).append(tuple(instance.args))
    return [docs[k] for k in sorted(docs)]


def xlt_items(case: str, tmp_path: Path, shots: int, seed: int):
    from xlt.eval.icl import prepare_icl_items
    from xlt.eval.readers import get_reader
    from xlt.eval.templates import load_template

    _, splits, scored, fewshot, lang = CASES[case]
    template = load_template(XLT_TASK[case.split("_")[0]], prompts="lm-eval")
    read = get_reader(template.reader, template.label_field)
    test = read(write_jsonl(tmp_path / "xlt" / f"{scored}.jsonl", splits[scored]))
    dev = read(write_jsonl(tmp_path / "xlt" / f"{fewshot}.jsonl", splits[fewshot]))
    return template, prepare_icl_items(template=template, test={lang: test}, dev={lang: dev}, shots=shots,
                                       seed=seed)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("shots,seed", [(0, 1234), (2, 1234), (3, 7)])
def test_requests_equal_the_harness_task_files(case, shots, seed, tmp_path, harness_manager):
    theirs = harness_requests(case, harness_manager, shots, seed)
    _, prepared = xlt_items(case, tmp_path, shots, seed)
    assert len(prepared) == len(theirs) > 0
    for item, requests in zip(prepared, theirs):
        assert item.requests == requests


def test_the_prompts_are_the_harness_quirks(tmp_path):
    """What the harness's task files do that the AFP prompts do not, spelled out on one item each."""
    _, [xnli, *_] = xlt_items("xnli_de", tmp_path / "a", 0, 0)
    assert xnli.requests[2] == ("", " Der Zug kam spät an., richtig? Nein, Der Zug war pünktlich.")
    _, [copa, *_] = xlt_items("xcopa_zh", tmp_path / "b", 1, 1234)
    context, continuation = copa.requests[0]
    assert context.endswith("\n\nThe woman tolerated her friend's difficult behavior 因为")
    assert continuation == " the woman knew her friend was going through a hard time."
    _, paws = xlt_items("paws_en", tmp_path / "c", 0, 0)
    assert len(paws) == 2  # the item with an empty sentence2 is left out, as the harness filters it
    assert paws[0].requests == [("", "It's the band's first album, right? No, this is the band's debut album."),
                                ("", "It's the band's first album, right? Yes, this is the band's debut album.")]
    _, [wino, *_] = xlt_items("xwinograd_en", tmp_path / "d", 0, 0)
    assert wino.requests == [("The trophy didn't fit in the suitcase because the trophy", " was too big."),
                             ("The trophy didn't fit in the suitcase because the suitcase", " was too big.")]


def test_demonstrations_are_drawn_per_item_as_the_harness_draws_them():
    import random

    from xlt.eval.icl import sample_demonstrations_per_item

    from xlt.eval.readers import RawItem

    pool = [RawItem({"text": f"t{k}"}, k % 2) for k in range(6)]
    rng = random.Random(1234)
    assert sample_demonstrations_per_item(pool, 3, pool[:4], 1234) == [rng.sample(pool, 3) for _ in range(4)]
    assert sample_demonstrations_per_item(pool, 0, pool[:2], 1234) == [[], []]
    # excluding the item: k + 1 drawn, the item's equals removed, the first k kept
    rng = random.Random(5)
    expected = []
    for item in pool:
        drawn = [d for d in rng.sample(pool, 3) if d.fields != item.fields][:2]
        expected.append(drawn)
    assert sample_demonstrations_per_item(pool, 2, pool, 5, exclude_item=True) == expected
    assert all(item not in demos for item, demos in zip(pool, expected))


def test_afp_prompts_stay_the_default():
    from xlt.errors import ConfigError
    from xlt.eval.templates import load_template

    afp = load_template("xnli")
    assert afp.prompts_from == "afp" and afp.demonstrations == "fixed" and afp.scoring == "afp"
    assert afp.prompt_for("en").test_template == "{premise}, right? {choice}, {hypothesis}"
    harness = load_template("xnli", prompts="lm-eval")
    assert harness.prompts_from == "lm-eval" and harness.scoring == "lm-eval"
    assert load_template("belebele", prompts="lm-eval").source == "template belebele"  # one prompt set
    with pytest.raises(ConfigError, match="unknown prompt set 'gpt'"):
        load_template("xnli", prompts="gpt")


@pytest.fixture(scope="module")
def tiny_llama(tiny_llama_dir):
    from xlt.models import load_model, load_tokenizer

    return load_model(tiny_llama_dir, dtype="float32").eval(), load_tokenizer(tiny_llama_dir)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["xnli_de", "xcopa_zh"])
def test_loglikelihoods_equal_the_harness(case, tiny_llama, tmp_path):
    """``simple_evaluate`` on the harness's own task file (2 shots, its few-shot seed) and
    ``evaluate_icl`` on the same rows: every per-choice log-likelihood within 1e-4."""
    from xlt.eval.icl import evaluate_icl
    from xlt.eval.lm_eval_bridge import run_lm_eval
    from xlt.eval.readers import get_reader
    from xlt.eval.templates import load_template

    model, tokenizer = tiny_llama
    name, local = _local_task(case, tmp_path)
    harness = run_lm_eval(model, tokenizer, [name], include_path=[str(local)], log_samples=True, batch_size=4,
                          num_fewshot=2, seed=1234)
    _, splits, scored, fewshot, lang = CASES[case]
    template = load_template(case.split("_")[0], prompts="lm-eval")
    read = get_reader(template.reader)
    test = read(write_jsonl(tmp_path / "xlt" / "test.jsonl", splits[scored]))
    dev = read(write_jsonl(tmp_path / "xlt" / "dev.jsonl", splits[fewshot]))
    table, results = evaluate_icl(model, tokenizer, template=template, test={lang: test}, dev={lang: dev}, shots=2,
                                  seed=1234, scoring=template.scoring, batch_size=4)
    samples = sorted(harness["samples"][name], key=lambda s: s["doc_id"])
    assert len(samples) == len(results) == len(splits[scored])
    for sample, result in zip(samples, results):
        assert result.loglikelihoods == pytest.approx([r[0][0] for r in sample["resps"]], abs=1e-4)
    assert table[lang]["acc"] == pytest.approx(harness["results"][name]["acc,none"])


@pytest.mark.slow
def test_an_over_long_request_is_truncated_as_the_harness_truncates(bpe_tokenizer, tmp_path):
    """A 25-position model and requests of 8 to 39 tokens: xlt's scores equal the harness's
    ``HFLM.loglikelihood`` (which feeds ``tokens[-(L+1):-1]``), the one of exactly L + 1 = 26
    tokens included (which the harness does not shorten at all)."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from xlt.eval.scoring import encode_requests, score_encoded
    from xlt.testing import tiny_model

    model = tiny_model("llama", bpe_tokenizer, max_positions=25, seed=3)
    words = "the cat sat on the mat and the dog ran in the park while a bird sang over the old red barn".split()
    pairs = [(" ".join(words[:n - 2]), " " + " ".join(words[n - 2:n])) for n in (6, 9, 12, 14, 15, 16, 20)]
    encoded = encode_requests(bpe_tokenizer, pairs, "lm-eval")
    lengths = [len(e.input_ids) for e in encoded]
    assert 26 in lengths and any(n > 26 for n in lengths) and any(n <= 25 for n in lengths)
    ours = score_encoded(model, encoded, batch_size=4, pad_token_id=bpe_tokenizer.pad_token_id, max_length=25)
    lm = HFLM(pretrained=model, tokenizer=bpe_tokenizer, batch_size=4, max_length=25)
    instances = [Instance("loglikelihood", None, pair, k) for k, pair in enumerate(pairs)]
    theirs = lm.loglikelihood(instances, disable_tqdm=True)
    assert [s for s, _ in ours] == pytest.approx([s for s, _ in theirs], abs=1e-4)
    assert [g for _, g in ours] == [g for _, g in theirs]


@pytest.mark.slow
def test_icl_cli_prompts_lm_eval(tiny_llama_dir, tmp_path, xlt_cli):
    """``--prompts lm-eval`` on the command line: the harness's prompt, its scoring rule, and a
    language the harness's task lacks refused in one line before the model loads."""
    test = write_jsonl(tmp_path / "zh" / "test.jsonl", XCOPA_TEST)
    write_jsonl(tmp_path / "zh" / "dev.jsonl", XCOPA_VALIDATION)
    out, samples = tmp_path / "xcopa.json", tmp_path / "items.jsonl"
    env = {"OMP_NUM_THREADS": "1"}
    proc = xlt_cli("eval", "icl", "--model", tiny_llama_dir, "--task", "xcopa", "--prompts", "lm-eval",
                   "--languages", "zh", "--test", f"{tmp_path}/{{lang}}/test.jsonl",
                   "--dev", f"{tmp_path}/{{lang}}/dev.jsonl", "--shots", "2", "--seeds", "1234",
                   "--output", out, "--log-samples", samples, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["prompts"] == "lm-eval" and report["scoring"] == "lm-eval"
    assert report["template"] == "template xcopa.lm-eval"
    assert report["runs"][0]["results"]["zh"]["n"] == 2 and "acc_norm" in report["runs"][0]["results"]["zh"]
    proc = xlt_cli("eval", "icl", "--model", tmp_path / "no-model", "--task", "xcopa", "--prompts", "lm-eval",
                   "--languages", "en", "--test", test, env=env)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "template xcopa.lm-eval: template 'xcopa' has no prompt for language 'en'" in proc.stderr


@pytest.mark.slow
def test_suite_prompts_lm_eval(tiny_llama, tiny_llama_dir, tmp_path, capsys):
    """``xlt eval suite --prompts lm-eval``: the harness's XNLI prompt and per-item
    demonstrations, the same numbers as ``evaluate_icl`` with that template."""
    from xlt.cli import main
    from xlt.eval.icl import evaluate_icl
    from xlt.eval.readers import read_xnli
    from xlt.eval.templates import load_template

    test = write_jsonl(tmp_path / "de" / "validation.jsonl", XNLI_TEST)
    dev = write_jsonl(tmp_path / "de" / "train.jsonl", XNLI_TRAIN)
    out = tmp_path / "suite"
    assert main(["eval", "suite", "--model", str(tiny_llama_dir), "--tasks", "xnli", "--prompts", "lm-eval",
                 "--languages", "de", "--data", f"xnli={tmp_path}/{{lang}}/validation.jsonl",
                 "--dev", f"xnli={tmp_path}/{{lang}}/train.jsonl", "--shots", "2", "--seed", "1234",
                 "--out", str(out), "--device", "cpu"]) == 0, capsys.readouterr().err
    report = json.loads((out / "results.json").read_text())
    assert report["tasks"]["xnli"]["template"] == "template xnli.lm-eval"
    assert report["tasks"]["xnli"]["scoring"] == "lm-eval"
    model, tokenizer = tiny_llama
    table, _ = evaluate_icl(model, tokenizer, template=load_template("xnli", prompts="lm-eval"),
                            test={"de": read_xnli(test)}, dev={"de": read_xnli(dev)}, shots=2, seed=1234,
                            scoring="lm-eval")
    assert report["results"]["xnli"]["de"] == pytest.approx(table["de"])


def _harness_yaml(relative: str) -> dict:
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: f"!{suffix} {node.value}")
    path = Path(lm_eval.__file__).parent / "tasks" / relative
    return yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)


def test_every_language_of_the_harness_tasks_has_its_words():
    """Every language of the harness's xnli_*, paws_* and xcopa_* files, rendered by the
    harness's own template function and utils on one document, gives xlt's 0-shot requests."""
    import datasets
    from lm_eval.utils import apply_template

    from xlt.eval.icl import prepare_icl_items
    from xlt.eval.readers import RawItem
    from xlt.eval.templates import load_template

    tasks_dir = Path(lm_eval.__file__).parent / "tasks"
    xnli = load_template("xnli", prompts="lm-eval")
    doc = {"premise": "Ein Hund bellt.", "hypothesis": "Ein Tier ist laut.", "label": 1}
    files = sorted(tasks_dir.glob("xnli/xnli_*.yaml"))
    assert len(files) == len(xnli.prompts) == 15
    for path in files:
        config = _harness_yaml(f"xnli/{path.name}")
        [item] = prepare_icl_items(template=xnli, test={config["dataset_name"]: [RawItem(dict(doc), "neutral")]})
        theirs = [(apply_template(config["doc_to_text"], doc), " " + choice)
                  for choice in ast.literal_eval(apply_template(config["doc_to_choice"], doc))]
        assert item.requests == theirs, path.name
    import importlib.util

    spec = importlib.util.spec_from_file_location("harness_xcopa_utils", tasks_dir / "xcopa" / "utils.py")
    xcopa_utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(xcopa_utils)
    xcopa = load_template("xcopa", prompts="lm-eval")
    row = dict(XCOPA_TEST[0])
    langs = sorted(name[len("doc_to_text_"):] for name in dir(xcopa_utils) if name.startswith("doc_to_text_"))
    assert langs == sorted(xcopa.prompts)
    for lang in langs:
        for question in ("cause", "effect"):
            doc = dict(row, question=question)
            fields = {k: doc[k] for k in ("premise", "choice1", "choice2", "question")}
            [item] = prepare_icl_items(template=xcopa, test={lang: [RawItem(fields, 0)]})
            context = getattr(xcopa_utils, f"doc_to_text_{lang}")(doc)
            assert item.requests == [(context, " " + c) for c in xcopa_utils.doc_to_choice(doc)], lang
    spec = importlib.util.spec_from_file_location("harness_paws_utils", tasks_dir / "paws-x" / "utils.py")
    paws_utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(paws_utils)
    pawsx = load_template("pawsx", prompts="lm-eval")
    files = sorted(tasks_dir.glob("paws-x/paws_*.yaml"))
    assert len(files) == len(pawsx.prompts) == 7
    for path in files:
        config = _harness_yaml(f"paws-x/{path.name}")
        rows = [PAWSX_TEST[0], PAWSX_TRAIN[1], PAWSX_TRAIN[3]]
        docs = list(datasets.Dataset.from_list(rows))
        if "process_docs" in config:
            docs = list(paws_utils.process_docs_paraphrases(datasets.Dataset.from_list(rows)))
        items = [RawItem({k: r[k] for k in ("sentence1", "sentence2", "id")}, r["label"]) for r in rows]
        prepared = prepare_icl_items(template=pawsx, test={config["dataset_name"]: items})
        for item, doc in zip(prepared, docs):
            theirs = [("", choice) for choice in ast.literal_eval(apply_template(config["doc_to_choice"], doc))]
            assert item.requests == theirs, path.name


@pytest.mark.parametrize("change,message", [
    ({"demonstrations": "random"}, "demonstrations must be one of fixed, per_item, per_item_excluding_item"),
    ({"prompts": {"en": {"template": "{p}{choice}", "choices": ["a", "b"],
                         "derived": {"p": {"from": "premise", "apply": ["strip", "shout"]}}}}},
     "derived 'p' applies unknown step 'shout'"),
    ({"prompts": {"en": {"template": "{choice}", "choices": ["a", "b"], "drop_empty": "premise"}}},
     "drop_empty must list field names"),
])
def test_bad_lm_eval_template_keys_are_refused(change, message):
    from xlt.errors import ConfigError
    from xlt.eval.templates import parse_template

    data = {"reader": "xcopa", "labels": [0, 1], "prompts": {"en": {"template": "{premise}{choice}",
                                                                    "choices": ["{choice1}", "{choice2}"]}}}
    with pytest.raises(ConfigError, match=f"my.yaml: .*{message}"):
        parse_template({**data, **change}, "my.yaml")


def test_rewriting_steps():
    from xlt.eval.templates import TRANSFORMS

    assert TRANSFORMS["detokenize"]('He said " hi " ( twice ) , is n\'t it .') == 'He said"hi"(twice), isn\'t it.'
    assert TRANSFORMS["drop_final_punctuation"]("a;") == "a" and TRANSFORMS["drop_final_punctuation"]("a!") == "a!"
    assert TRANSFORMS["lower_first"]("Ötzi") == "ötzi" and TRANSFORMS["lower_first"]("") == ""
    assert TRANSFORMS["drop_last_char"]("ends.") == "ends"
