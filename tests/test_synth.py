"""The synthetic world: determinism, real parallelism, lexicons, tasks, files and the CLI.

Checks read the written files and world.json and re-parse sentences with the published
lexicon, so they do not trust the generator's own bookkeeping.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import pytest

from xlt.errors import ConfigError
from xlt.formats import read_records
from xlt.synth import WorldConfig, generate_world, write_world

SMALL = dict(corpus_lines=1200, corpus_shares=(3.0, 1.0, 1.0, 1.0), task_train=120, task_dev=30,
             task_test=60, translation_train=60, translation_dev=12, translation_test=18,
             parallel_train=50, vocab_size=500)
SMALL_ARGS = ["--corpus-lines", "1200", "--corpus-shares", "3,1,1,1", "--task-train", "120",
              "--task-dev", "30", "--task-test", "60", "--translation-train", "60",
              "--translation-dev", "12", "--translation-test", "18", "--parallel-train", "50",
              "--vocab-size", "500"]

EXPECTED_FILES = {
    "world.json",
    *(f"corpus/{c}.txt" for c in ("qaa", "qab", "qac", "qad")),
    *(f"tasks/{t}/{s}.jsonl" for t in ("polarity", "roles") for s in ("train", "dev", "test")),
    *(f"tasks/polarity/{s}.choice.jsonl" for s in ("train", "dev", "test")),
    *(f"parallel/{a}-{b}.{s}.jsonl" for a, b in itertools.combinations(("qaa", "qab", "qac", "qad"), 2)
      for s in ("train", "dev")),
    *(f"translation/{s}.jsonl" for s in ("train", "dev", "test")),
}


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory) -> Path:
    """A small world written in-process (seed 7)."""
    out = tmp_path_factory.mktemp("synth") / "world"
    write_world(generate_world(WorldConfig(seed=7, **SMALL)), out)
    return out


@pytest.fixture(scope="session")
def info(world_dir) -> dict:
    return json.loads((world_dir / "world.json").read_text(encoding="utf-8"))


class Parser:
    """Maps words back to concepts with the lexicon published in world.json."""

    def __init__(self, info: dict):
        self.info = info
        self.concepts = info["concepts"]
        self.inverse = {}
        for code, lexicon in info["lexicon"].items():
            inverse = {}
            for cid, form in lexicon.items():
                assert form not in inverse, f"{code}: form {form!r} is ambiguous"
                inverse[form] = cid
            self.inverse[code] = inverse

    def concepts_of(self, code: str, text: str) -> list[str]:
        return [self.inverse[code][w] for w in text.split() if w not in (".", "?")]

    def kind(self, cid: str) -> str:
        return self.concepts[cid]["kind"]

    def polarity_label(self, code: str, sentence: str) -> int:
        """Independent recomputation: verb polarity, flipped by the negation word."""
        ids = self.concepts_of(code, sentence)
        verbs = [c for c in ids if self.kind(c) == "verb"]
        assert len(verbs) == 1, sentence
        good = (self.concepts[verbs[0]]["polarity"] == "good") != ("fn:not" in ids)
        return 0 if good else 1


@pytest.fixture(scope="session")
def parser(info) -> Parser:
    return Parser(info)


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def split_prompt(prompt: str) -> tuple[str, str]:
    sentence, _, question = prompt.rpartition(" . ")
    assert question.endswith(" ?")
    return sentence, question[:-2]


# --------------------------------------------------------------------------------------------
# Design of the default world


def test_default_world_has_source_close_and_far_targets():
    world = generate_world(WorldConfig(corpus_lines=400, task_train=20, task_dev=10, task_test=10,
                                       translation_train=10, translation_dev=4, translation_test=4,
                                       parallel_train=10))
    assert world.codes == ["qaa", "qab", "qac", "qad"]
    orders = {lang.code: lang.word_order for lang in world.languages}
    assert orders == {"qaa": "SVO", "qab": "SVO", "qac": "SOV", "qad": "VSO"}
    qaa, qab = world.language("qaa"), world.language("qab")
    assert (qaa.adjective, qaa.determiner, qaa.adposition) == (qab.adjective, qab.determiner,
                                                               qab.adposition)
    assert "close" in qab.description and "far" in world.language("qac").description
    assert len({lang.name for lang in world.languages}) == 4
    # the same meaning in two languages, through the public rendering API
    meaning = world.translation["test"][0]
    assert world.render(meaning, "qaa") != world.render(meaning, "qac")
    with pytest.raises(ConfigError, match="qzz"):
        world.render(meaning, "qzz")


def test_bad_config_values_raise_config_error():
    for kwargs in ({"anchor_share": 1.5}, {"languages": 1}, {"word_orders": ("SVX",)},
                   {"corpus_shares": (1.0, 2.0)}, {"task_test": 0}, {"label_words": "english"},
                   {"corpus_lines": -1}, {"vocab_size": 10}):
        with pytest.raises(ConfigError):
            WorldConfig(**kwargs)


# --------------------------------------------------------------------------------------------
# Files and formats


def test_writes_exactly_the_documented_files(world_dir, info):
    files = {str(p.relative_to(world_dir)) for p in world_dir.rglob("*") if p.is_file()}
    assert {f for f in files if not f.startswith("tokenizer/")} == EXPECTED_FILES
    assert "tokenizer/tokenizer.json" in files
    assert info["seed"] == 7 and info["source_language"] == "qaa"
    assert [lang["code"] for lang in info["languages"]] == ["qaa", "qab", "qac", "qad"]
    for lang in info["languages"]:
        assert lang["name"] and lang["word_order"] and lang["description"]
    # world.json's file counts are the real record counts
    for rel, count in info["files"].items():
        assert len(lines(world_dir / rel)) == count, rel


def test_every_file_validates_with_the_format_readers(world_dir, info):
    codes = [lang["code"] for lang in info["languages"]]
    for path in sorted(world_dir.rglob("*.jsonl")):
        rel = str(path.relative_to(world_dir))
        kind = ("choice" if path.name.endswith(".choice.jsonl") else
                "task" if rel.startswith("tasks/") else "parallel")
        records = read_records(path, kind, languages=codes)
        assert len(records) == info["files"][rel]
        if rel.startswith("parallel/"):
            a, b = path.name.split(".")[0].split("-")
            assert a < b and {(r.src_lang, r.tgt_lang) for r in records} == {(a, b)}
    for code in codes:
        text = lines(world_dir / "corpus" / f"{code}.txt")
        assert text and all(line.strip() for line in text)


def test_tokenizer_loads_with_the_documented_specials(world_dir):
    from xlt.models import load_tokenizer

    tok = load_tokenizer(world_dir / "tokenizer")
    assert tok.convert_ids_to_tokens([0, 1, 2, 3]) == ["<unk>", "<s>", "</s>", "<pad>"]
    assert 300 <= len(tok) <= 500
    line = lines(world_dir / "corpus" / "qac.txt")[0]
    ids = tok(line)["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.unk_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True) == line


# --------------------------------------------------------------------------------------------
# Lexicons


def test_anchors_identical_and_other_words_distinct(info):
    lexicons = info["lexicon"]
    anchors = set(info["anchors"])
    content = [c for c, v in info["concepts"].items()
               if v["kind"] in ("numeral", "name", "person", "animal", "verb", "adjective", "place")]
    # default share 0.25 of 64 content concepts: the 8 numerals and the 8 names
    assert len(content) == 64 and len(anchors) == 16
    assert {info["concepts"][c]["kind"] for c in anchors} == {"numeral", "name"}
    shared = anchors | {"label:good", "label:bad"}  # label_words="shared"
    for a, b in itertools.combinations(lexicons, 2):
        for cid in lexicons[a]:
            if cid in shared:
                assert lexicons[a][cid] == lexicons[b][cid], cid
            else:
                assert lexicons[a][cid] != lexicons[b][cid], cid
        own_a = {f for c, f in lexicons[a].items() if c not in shared}
        own_b = {f for c, f in lexicons[b].items() if c not in shared}
        assert not own_a & own_b  # no accidental shared word, whatever the concept


@pytest.mark.parametrize("share, expected", [(0.0, 0), (0.5, 32), (1.0, 64)])
def test_anchor_share_knob(share, expected):
    world = generate_world(WorldConfig(anchor_share=share, label_words="native", corpus_lines=10,
                                       task_train=2, task_dev=2, task_test=2, translation_train=2,
                                       translation_dev=2, translation_test=2, parallel_train=2))
    lexicons = [lang.lexicon for lang in world.languages]
    identical = [c for c in lexicons[0] if all(lex[c] == lexicons[0][c] for lex in lexicons)]
    assert len(identical) == expected == len(world.anchors)
    assert all(world.concepts[c].kind not in ("function", "label") for c in identical)


def test_label_words_native_or_shared():
    small = dict(corpus_lines=10, task_train=2, task_dev=2, task_test=2, translation_train=2,
                 translation_dev=2, translation_test=2, parallel_train=2)
    native = generate_world(WorldConfig(label_words="native", **small))
    shared = generate_world(WorldConfig(label_words="shared", **small))
    assert len({lang.word("label:good") for lang in native.languages}) == 4
    assert len({lang.word("label:good") for lang in shared.languages}) == 1
    items = native.choice_items("polarity", "test")
    assert {r.choices for r in items if r.lang == "qab"} == {(" " + native.language("qab").word("label:good"),
                                                            " " + native.language("qab").word("label:bad"))}


# --------------------------------------------------------------------------------------------
# Parallelism and word order


def test_parallel_and_translation_pairs_share_their_meaning(world_dir, parser):
    for path in sorted((world_dir / "parallel").glob("*.jsonl")) + \
            sorted((world_dir / "translation").glob("*.jsonl")):
        records = read_records(path, "parallel")
        for r in records:
            src = Counter(parser.concepts_of(r.src_lang, r.src))
            tgt = Counter(parser.concepts_of(r.tgt_lang, r.tgt))
            assert src == tgt, (path.name, r)
            assert r.src != r.tgt or src.keys() <= set(parser.info["anchors"])


def test_translation_covers_every_direction_with_the_same_meanings(world_dir):
    for split in ("train", "dev", "test"):
        records = read_records(world_dir / "translation" / f"{split}.jsonl", "parallel")
        by_dir = {}
        for r in records:
            by_dir.setdefault((r.src_lang, r.tgt_lang), []).append((r.src, r.tgt))
        assert len(by_dir) == 12
        assert len({len(v) for v in by_dir.values()}) == 1
        for (a, b), pairs in by_dir.items():
            assert [(t, s) for s, t in pairs] == by_dir[(b, a)]
            # every direction out of a carries the same source sentences
            assert [s for s, _ in pairs] == [s for s, _ in by_dir[(a, "qab" if a == "qaa" else "qaa")]]


def test_word_order_of_each_language(world_dir, parser):
    orders = {lang["code"]: lang["word_order"] for lang in parser.info["languages"]}
    for code, order in orders.items():
        declaratives = [line for line in lines(world_dir / "corpus" / f"{code}.txt") if line.endswith(" .")]
        assert len(declaratives) > 50
        for line in declaratives:
            kinds = [parser.kind(c) for c in parser.concepts_of(code, line)]
            verb_at = kinds.index("verb")
            if order == "SOV":
                assert verb_at == len(kinds) - 1, line      # the verb closes the clause
            elif order == "VSO":
                assert verb_at <= 1, line                   # (negation) verb first
            elif order == "SVO":
                assert 1 <= verb_at < len(kinds) - 1, line
    # adjectives: before the noun in the source, after it in the SOV language
    for code, side in (("qaa", "before"), ("qac", "after")):
        for line in lines(world_dir / "corpus" / f"{code}.txt"):
            kinds = [parser.kind(c) for c in parser.concepts_of(code, line)]
            for k, kind in enumerate(kinds):
                if kind == "adjective":
                    neighbour = kinds[k + 1] if side == "before" else kinds[k - 1]
                    assert neighbour in ("person", "animal"), line


# --------------------------------------------------------------------------------------------
# Tasks


def test_polarity_labels_follow_the_meaning_and_are_balanced(world_dir, parser, info):
    label_words = info["tasks"]["polarity"]["label_words"]
    for split, size in (("train", 120), ("dev", 30), ("test", 60)):
        examples = read_records(world_dir / "tasks" / "polarity" / f"{split}.jsonl", "task")
        choices = read_records(world_dir / "tasks" / "polarity" / f"{split}.choice.jsonl", "choice")
        assert len(examples) == len(choices) == 4 * size
        per_lang = Counter()
        for ex, item in zip(examples, choices):
            sentence, question = split_prompt(ex.prompt)
            assert parser.inverse[ex.lang][question] == "q:polarity"
            label = parser.polarity_label(ex.lang, sentence)
            assert ex.completion == " " + label_words[ex.lang][label]
            assert item.context == ex.prompt and item.label == label
            assert item.choices == tuple(" " + w for w in label_words[ex.lang])
            per_lang[(ex.lang, label)] += 1
        assert set(per_lang.values()) == {size // 2}  # balanced in every language


def test_roles_answers_are_the_asked_role(world_dir, parser):
    orders = {lang["code"]: lang["word_order"] for lang in parser.info["languages"]}
    role_of = {"q:agent": "agent", "q:patient": "patient", "q:place": "place"}
    for split in ("train", "dev", "test"):
        examples = read_records(world_dir / "tasks" / "roles" / f"{split}.jsonl", "task")
        roles = Counter()
        by_lang = {}
        for ex in examples:
            sentence, question = split_prompt(ex.prompt)
            role = role_of[parser.inverse[ex.lang][question]]
            answer = ex.completion[1:]
            assert ex.completion.startswith(" ") and f" {answer} " in f" {sentence} "
            words = sentence.split()
            ids = parser.concepts_of(ex.lang, answer)
            kinds = {parser.kind(c) for c in ids}
            if role == "place":
                assert kinds & {"function"} and "place" in kinds
                assert any(c.startswith("rel:") for c in ids)
            else:
                assert kinds & {"person", "animal", "name"} and "verb" not in kinds
                # where the agent stands depends on the word order
                start = f" {sentence} ".index(f" {answer} ")
                if orders[ex.lang] in ("SVO", "SOV") and role == "agent":
                    assert start == 0
                if orders[ex.lang] == "VSO" and role == "agent":
                    verb_idx = [parser.kind(c) for c in parser.concepts_of(ex.lang, sentence)].index("verb")
                    assert answer.split()[0] == words[verb_idx + 1]
            roles[(ex.lang, role)] += 1
            by_lang.setdefault(ex.lang, []).append((role, Counter(ids)))
        counts = list(roles.values())
        assert max(counts) - min(counts) <= 2  # the three questions are balanced
        # the same item asks for the same role, with the same concepts, in every language
        for code in ("qab", "qac", "qad"):
            assert by_lang[code] == by_lang["qaa"]


def test_splits_are_disjoint_and_dev_test_are_parallel(world_dir, parser):
    def sentences(task, split, code):
        out = []
        for ex in read_records(world_dir / "tasks" / task / f"{split}.jsonl", "task"):
            if ex.lang == code:
                out.append(split_prompt(ex.prompt)[0])
        return out

    for task in ("polarity", "roles"):
        sets = {split: sentences(task, split, "qaa") for split in ("train", "dev", "test")}
        for split, items in sets.items():
            assert len(set(items)) == len(items), split   # meanings unique within a split
        assert not set(sets["train"]) & set(sets["dev"])
        assert not set(sets["train"]) & set(sets["test"])
        assert not set(sets["dev"]) & set(sets["test"])
        for split in ("dev", "test"):
            source = [Counter(parser.concepts_of("qaa", s)) for s in sets[split]]
            for code in ("qab", "qac", "qad"):
                other = [Counter(parser.concepts_of(code, s)) for s in sentences(task, split, code)]
                assert other == source
    translation = {s: {r.src for r in read_records(world_dir / "translation" / f"{s}.jsonl", "parallel")
                       if r.src_lang == "qaa"} for s in ("train", "dev", "test")}
    assert not translation["train"] & translation["dev"]
    assert not translation["train"] & translation["test"]
    assert not translation["dev"] & translation["test"]
    # no held-out meaning leaks into the monolingual corpus
    corpus = {split_prompt(x)[0] if x.endswith(" ?") else x[:-2]
              for x in lines(world_dir / "corpus" / "qaa.txt")}
    held_out = set(sentences("polarity", "dev", "qaa")) | set(sentences("polarity", "test", "qaa")) \
        | {s[:-2] for s in translation["dev"] | translation["test"]}
    assert not corpus & held_out


def test_corpus_imbalance_gives_the_requested_line_counts(world_dir, info):
    counts = {code: len(lines(world_dir / "corpus" / f"{code}.txt")) for code in info["lexicon"]}
    assert counts == {"qaa": 600, "qab": 200, "qac": 200, "qad": 200}
    assert {lang["code"]: lang["corpus_lines"] for lang in info["languages"]} == counts
    config = WorldConfig(corpus_lines=1001, corpus_shares=(0.9, 0.1, 0.0, 0.0))
    assert config.corpus_counts() == {"qaa": 901, "qab": 100, "qac": 0, "qad": 0}
    questions = sum(line.endswith(" ?") for line in lines(world_dir / "corpus" / "qaa.txt"))
    assert 0.03 * 600 < questions < 0.2 * 600   # question_share 0.1


# --------------------------------------------------------------------------------------------
# CLI


@pytest.mark.slow
def test_cli_is_deterministic_byte_for_byte(tmp_path, xlt_cli, world_dir):
    outs = []
    for name, hashseed in (("a", "1"), ("b", "2")):
        out = tmp_path / name
        result = xlt_cli("synth", "--out", out, "--seed", "7", *SMALL_ARGS,
                         env={"PYTHONHASHSEED": hashseed})
        assert result.returncode == 0, result.stderr
        assert "wrote" in result.stdout
        outs.append(out)
    files = [sorted(str(p.relative_to(o)) for p in o.rglob("*") if p.is_file()) for o in outs]
    assert files[0] == files[1]
    assert any(f.startswith("tokenizer/") for f in files[0])
    for rel in files[0]:
        assert (outs[0] / rel).read_bytes() == (outs[1] / rel).read_bytes(), rel
        # the CLI writes what the Python API writes
        assert (outs[0] / rel).read_bytes() == (world_dir / rel).read_bytes(), rel
    # another seed gives another world
    other = tmp_path / "c"
    assert xlt_cli("synth", "--out", other, "--seed", "8", *SMALL_ARGS).returncode == 0
    assert (other / "corpus" / "qaa.txt").read_bytes() != (outs[0] / "corpus" / "qaa.txt").read_bytes()


def test_cli_refuses_existing_output_without_overwrite(tmp_path, xlt_cli):
    out = tmp_path / "world"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = xlt_cli("synth", "--out", out, *SMALL_ARGS)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "already exists" in result.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    result = xlt_cli("synth", "--out", out, "--overwrite", *SMALL_ARGS)
    assert result.returncode == 0, result.stderr
    assert not (out / "keep.txt").exists() and (out / "world.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["world"]  # no temporary leftovers


def test_cli_instructions_option_adds_bactrian_files_and_changes_nothing_else(tmp_path, world_dir, capsys):
    import json

    from xlt.synth.cli import synth_command
    from xlt.synth.instructions import instruction_records

    out = tmp_path / "w"
    assert synth_command(["--out", str(out), "--seed", "7", *SMALL_ARGS, "--instructions", "3"], "xlt synth") == 0
    expected = instruction_records(generate_world(WorldConfig(seed=7, **SMALL)), limit=3)
    written = sorted(p.name for p in (out / "instructions").iterdir())
    assert written == [f"{code}.json" for code in sorted(expected)]
    for code, rows in expected.items():
        assert json.loads((out / "instructions" / f"{code}.json").read_text(encoding="utf-8")) == rows
        assert len(rows) == 6  # 3 role questions + 3 sentences
    # every other file is the API's world, byte for byte
    files = sorted(str(p.relative_to(world_dir)) for p in world_dir.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(out)) for p in out.rglob("*")
                           if p.is_file() and p.parent.name != "instructions")
    for rel in files:
        assert (out / rel).read_bytes() == (world_dir / rel).read_bytes(), rel


@pytest.mark.parametrize("args, message", [
    (["--anchor-share", "1.5"], "anchor_share"),
    (["--word-orders", "SVO,XYZ"], "XYZ"),
    (["--corpus-shares", "1,2"], "corpus_shares"),
    (["--corpus-shares", "1,x,1,1"], "corpus_shares"),
    (["--languages", "1"], "languages"),
    (["--task-test", "0"], "task_test"),
    (["--seed", "abc"], "--seed"),
    (["--instructions", "0"], "--instructions"),
])
def test_cli_bad_knob_is_one_line_and_leaves_nothing(tmp_path, xlt_cli, args, message):
    out = tmp_path / "new" / "world"
    result = xlt_cli("synth", "--out", out, *args)
    assert result.returncode == 2
    assert result.stderr.startswith("xlt: error:") and result.stderr.count("\n") == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "new").exists()


def test_cli_help_lists_every_knob_with_defaults(xlt_cli):
    result = xlt_cli("synth", "--help")
    assert result.returncode == 0
    for flag in ("--out", "--seed", "--languages", "--word-orders", "--anchor-share",
                 "--label-words", "--corpus-lines", "--corpus-shares", "--task-train",
                 "--translation-train", "--parallel-train", "--vocab-size", "--overwrite"):
        assert flag in result.stdout
    assert "default: 0.25" in result.stdout


def test_meaning_distribution_has_selectional_preferences(world_dir, parser, info):
    """Verbs prefer agents of one kind in every language (so words have distinct contexts)."""
    frames = info["meaning_distribution"]["verb_frames"]
    for code in ("qaa", "qac"):
        agents = {"animal": Counter(), "person": Counter()}
        for line in lines(world_dir / "corpus" / f"{code}.txt"):
            ids = parser.concepts_of(code, line)
            verb = next(c for c in ids if parser.kind(c) == "verb")
            preferred = frames[verb]["agent"]
            if preferred == "any":
                continue
            entities = [c for c in ids if parser.kind(c) in ("person", "animal", "name")]
            # the agent is the first entity in S-before-O orders (qaa SVO, qac SOV)
            kind = "animal" if parser.kind(entities[0]) == "animal" else "person"
            agents[preferred][kind] += 1
        # uniform sampling would give animals 1/3 and people 2/3 of the agents
        animal = agents["animal"]
        person = agents["person"]
        assert animal["animal"] / sum(animal.values()) > 0.5
        assert person["person"] / sum(person.values()) > 0.8


@pytest.mark.slow
def test_default_world_line_lengths_and_shared_tokens_are_as_documented(tmp_path):
    """docs/synth.md: corpus lines of 3-13 words; the source shares 26 token types with the SVO
    and SOV targets and 18 with the VSO target (sentence-initial names are other tokens)."""
    from xlt.models import load_tokenizer

    out = tmp_path / "world"
    write_world(generate_world(WorldConfig()), out)
    tokenizer = load_tokenizer(out / "tokenizer")
    lengths, types = set(), {}
    for lang in ("qaa", "qab", "qac", "qad"):
        lines = (out / "corpus" / f"{lang}.txt").read_text(encoding="utf-8").splitlines()
        lengths |= {len(line.replace(".", " ").replace("?", " ").split()) for line in lines}
        types[lang] = {t for ids in tokenizer(lines, add_special_tokens=False)["input_ids"] for t in ids}
    assert (min(lengths), max(lengths)) == (3, 13)
    assert [len(types["qaa"] & types[lang]) for lang in ("qab", "qac", "qad")] == [26, 26, 18]
