"""AFP data generation: the spec's generator conformance cases (G1-G4) and bad input.

The md5 digests, record counts and direction counts come from the reference generator run on
the same inputs (they are the spec's numbers, not this implementation's output).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from xlt.afp import data as afp
from xlt.errors import ConfigError, DataError

EN = {"alpaca-0": ("Give three tips for staying healthy.", "", "Eat well, exercise, sleep."),
      "alpaca-1": ("Translate the sentence.", "I like cats.", "The sentence is about cats."),
      "alpaca-10": ("print('hi')", "", "It prints hi."),
      "alpaca-2": ("What is the capital of France?", "", "Paris."),
      "dolly-5": ("Summarize the text.", "Cats sleep a lot.", "Cats are sleepy.")}
ZH = {"alpaca-0": ("给出三个保持健康的建议。", "", "吃好，运动，睡好。"),
      "alpaca-1": ("翻译这个句子。", "我喜欢猫。", "这个句子是关于猫的。"),
      "alpaca-10": ("print('hi')", "", "它打印 hi。"),
      "alpaca-2": ("法国的首都是哪里？", "", "巴黎。"),
      "dolly-5": ("总结这段文字。", "猫睡得很多。", "猫很困。")}
EN_ORDER = ["alpaca-2", "alpaca-1", "dolly-5", "alpaca-10", "alpaca-0"]
ZH_ORDER = ["dolly-5", "alpaca-1", "alpaca-2", "alpaca-0", "alpaca-10"]
NAMES = {"en": "English", "zh": "Chinese", "de": "German"}


def _rows(table, order):
    return [{"instruction": table[i][0], "input": table[i][1], "id": i, "output": table[i][2]} for i in order]


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def g1_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bactrian-g1")
    (d / "en.json").write_text(json.dumps(_rows(EN, EN_ORDER), ensure_ascii=False, indent=2), encoding="utf-8")
    (d / "zh.json").write_text(json.dumps(_rows(ZH, ZH_ORDER), ensure_ascii=False, indent=2), encoding="utf-8")
    return d


def _g3_rows(lang):
    return [{"id": "id-%05d" % i, "instruction": f"[{lang}] instruction {i}",
             "input": f"[{lang}] input {i}" if i % 3 == 0 else "", "output": f"[{lang}] output {i}"}
            for i in range(1000)]


# -------------------------------------------------------------------------------------------- G1


def test_g1_bilingual_cli_byte_identical(g1_dir, tmp_path, xlt_cli):
    out = tmp_path / "out"
    proc = xlt_cli("data", "afp", "--mode", "bilingual", "-l", "en", "zh", "-x", "0.5", "-r", "3",
                   "-s", "0", "-b", g1_dir, "-o", out)
    assert proc.returncode == 0, proc.stderr
    path = out / "AFP.en_zh.X0.5.R3.0.json"
    assert sorted(p.name for p in out.iterdir()) == [path.name]
    assert _md5(path) == "95aec6f31c7dafc00a76b54ad09eb2f0"
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 16
    assert all(list(r) == ["sent0", "sent1", "clm_text", "clm_prompt_len"] for r in records)
    assert records[0] == {"sent0": "Give three tips for staying healthy.", "sent1": "给出三个保持健康的建议。",
                          "clm_text": "法国的首都是哪里？ Answer in English: Paris.", "clm_prompt_len": 29}
    assert records[1]["sent0"] == "What is the capital of France?"
    assert records[1]["clm_text"] == "Give three tips for staying healthy. Answer in Chinese: 吃好，运动，睡好。"
    assert records[1]["clm_prompt_len"] == 56
    assert records[2]["clm_text"] == "总结这段文字。 猫睡得很多。 Answer in English: Cats are sleepy."
    assert records[2]["clm_prompt_len"] == 34
    # "print('hi')" is the same in both languages, so the source language is not visible in
    # the text; the command reports the planned directions
    assert "directions: en->en 6, en->zh 2, zh->en 7, zh->zh 1" in proc.stdout
    assert {r["sent0"] for r in records} <= {v[0] for k, v in EN.items() if k != "alpaca-10"}
    for r in records:  # prompt length counts characters up to the output
        assert r["clm_text"][:r["clm_prompt_len"]].endswith(": ")
    assert "wrote 16 records" in proc.stdout


def test_g1_half_repeat_and_gzip_input(g1_dir, tmp_path):
    from xlt.afp.cli import data_afp_command

    gz_dir = tmp_path / "gz"
    gz_dir.mkdir()
    for lang in ("en", "zh"):
        with gzip.open(gz_dir / f"{lang}.json.gz", "wb") as handle:
            handle.write((g1_dir / f"{lang}.json").read_bytes())
    assert data_afp_command(["-b", str(gz_dir), "-o", str(tmp_path / "o"), "-r", "0.5"], "xlt data afp") == 0
    path = tmp_path / "o" / "AFP.en_zh.X0.5.R0.5.json"
    assert _md5(path) == "5eadc81a33449e86966f695c4151d636"
    assert len(path.read_text(encoding="utf-8").splitlines()) == 3


def test_record_count_rule_and_exact_count_switch(g1_dir, tmp_path):
    from xlt.afp.cli import data_afp_command, read_bactrian_file

    data = afp.align_by_id({lang: read_bactrian_file(g1_dir / f"{lang}.json") for lang in ("en", "zh")},
                           ["en", "zh"])
    # float repeat: int(R*N) + 1 (capped by the pool of int(R)+1 passes); int repeat: R*N
    assert len(afp.plan_bilingual(data, afp.AFPOptions(repeat=3.0))) == 16
    assert len(afp.plan_bilingual(data, afp.AFPOptions(repeat=2))) == 10
    assert len(afp.plan_bilingual(data, afp.AFPOptions(repeat=3.0, exact_count=True))) == 15
    assert data_afp_command(["-b", str(g1_dir), "-o", str(tmp_path), "-r", "3", "--exact-count", "--jsonl"],
                            "xlt data afp") == 0
    assert len((tmp_path / "AFP.en_zh.X0.5.R3.0.jsonl").read_text(encoding="utf-8").splitlines()) == 15


# -------------------------------------------------------------------------------------------- G2


def test_g2_translation_cli(tmp_path, xlt_cli):
    tsv = tmp_path / "opus.en2zh.tsv"
    tsv.write_text("Hello world.\t你好，世界。\nHow are you?\t你好吗？\nGood night.\t晚安。\n", encoding="utf-8")
    proc = xlt_cli("data", "afp", "-m", "translation", "-l", "en", "zh", "-c", "0.5", "-r", "3", "-s", "0",
                   "-t", tsv, "-o", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    path = tmp_path / "out" / "AFP.en-zh-trans.C0.5.R3.0.json"
    assert _md5(path) == "f12b8321b4301fb5b7b44cdf10025690"
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 10
    assert records[0] == {"sent0": "Good night.", "sent1": "晚安。",
                          "clm_text": "Good night. Translate into Chinese: 晚安。", "clm_prompt_len": 36}
    texts = {r["clm_text"]: r["clm_prompt_len"] for r in records}
    assert "你好，世界。 Translate into English: Hello world." in texts
    assert texts.get("Good night. = 晚安。") == 14


# -------------------------------------------------------------------------------------------- G3, G4


@pytest.fixture(scope="module")
def g3_data():
    return afp.align_by_id({lang: _g3_rows(lang) for lang in ("en", "zh", "de")}, ["en", "zh", "de"])


def test_g3_bilingual_1k(g3_data):
    text = "".join(afp.generate(afp.AFPOptions(repeat=3.0), data=g3_data))
    assert hashlib.md5(text.encode("utf-8")).hexdigest() == "0a43b3708e01a3e85c9de63816d13de8"
    records = [json.loads(line) for line in text.splitlines()]
    assert len(records) == 3001
    directions = Counter((r["clm_text"][1:3], "en" if "Answer in English" in r["clm_text"] else "zh")
                         for r in records)
    assert directions == {("en", "en"): 757, ("en", "zh"): 790, ("zh", "en"): 707, ("zh", "zh"): 747}


def test_g3_translation_1k():
    pairs = afp.parse_translation_lines([f"en sentence {i}\tzh sentence {i}\n" for i in range(1000)])
    text = "".join(afp.generate(afp.AFPOptions(mode="translation", repeat=3.0), translation_pairs=pairs))
    assert hashlib.md5(text.encode("utf-8")).hexdigest() == "9e2f51ce5b474b59cf430a150d96eb9b"
    records = [json.loads(line) for line in text.splitlines()]
    kinds = Counter((r["sent0"][:2], "=" if " = " in r["clm_text"] else "T") for r in records)
    assert kinds == {("en", "="): 760, ("en", "T"): 777, ("zh", "="): 734, ("zh", "T"): 730}


def test_g4_crosslingual_1k(g3_data):
    options = afp.AFPOptions(mode="crosslingual", languages=("en", "zh", "de"), repeat=3.0)
    assert afp.output_name(options) == "AFP.en_zh_de.X0.5.C0.5.R3.0.json"
    records = [json.loads(line) for line in afp.generate(options, data=g3_data)]
    assert len(records) == 3001
    directions = Counter((r["clm_text"][1:3], {"English": "en", "Chinese": "zh", "German": "de"}[
        re.search(r"Answer in (\w+):", r["clm_text"]).group(1)]) for r in records)
    assert directions == {("en", "en"): 472, ("zh", "zh"): 478, ("de", "de"): 498, ("en", "zh"): 392,
                          ("zh", "en"): 396, ("en", "de"): 354, ("de", "en"): 411}
    pairs = Counter((r["sent0"][1:3], r["sent1"][1:3]) for r in records)
    assert pairs == {("en", "zh"): 1555, ("en", "de"): 1446}


def test_rendering_equals_json_dumps():
    rng = random.Random(3)
    alphabet = ['"', "\\", "\n", "\t", "\x00", "\x1f", "\u2028", "é", "猫", "😀", "a", " ", "/"]
    for _ in range(200):
        s = [("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))) for _ in range(3)]
        expected = json.dumps({"sent0": s[0], "sent1": s[1], "clm_text": s[2], "clm_prompt_len": 7},
                              ensure_ascii=False) + "\n"
        assert afp._line(s[0], s[1], s[2], 7) == expected


# -------------------------------------------------------------------------------------------- bad input


def test_misaligned_ids_cli_error(tmp_path, xlt_cli):
    d = tmp_path / "bx"
    d.mkdir()
    (d / "en.json").write_text(json.dumps(_rows(EN, EN_ORDER)), encoding="utf-8")
    zh = _rows(ZH, ZH_ORDER)
    zh[0]["id"] = "dolly-6"
    (d / "zh.json").write_text(json.dumps(zh, ensure_ascii=False), encoding="utf-8")
    proc = xlt_cli("data", "afp", "-b", d, "-o", tmp_path / "out", "-r", "3")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "zh.json" in lines[0] and "align" in lines[0]
    assert not (tmp_path / "out").exists()


def test_tsv_missing_column_names_line(tmp_path, xlt_cli):
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("a\tb\nc\t\ne\tf\n", encoding="utf-8")
    proc = xlt_cli("data", "afp", "-m", "translation", "-t", tsv, "-o", tmp_path / "out")
    assert proc.returncode == 2
    assert f"{tsv}:2:" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "AFP.en-zh-trans.C0.5.R1.0.json").exists()


def test_unknown_language_code_and_names(g1_dir, tmp_path):
    from xlt.afp.cli import data_afp_command

    with pytest.raises(ConfigError, match="unknown language code 'qaa'"):
        data_afp_command(["-b", str(g1_dir), "-l", "qaa", "zh", "-o", str(tmp_path)], "xlt data afp")
    with pytest.raises(ConfigError, match="exactly 2 languages"):
        afp.AFPOptions(languages=("en", "zh", "de"))
    with pytest.raises(ConfigError, match="3 or more"):
        afp.AFPOptions(mode="crosslingual", languages=("en", "zh"))
    text, n = afp.instruction_sample("Do it.", "", "Done.", afp.language_name("qab", {"qab": "Bolish"}))
    assert text == "Do it. Answer in Bolish: Done." and n == len("Do it. Answer in Bolish: ")


def test_existing_output_refused(g1_dir, tmp_path):
    from xlt.afp.cli import data_afp_command
    from xlt.errors import OutputExistsError

    target = tmp_path / "AFP.en_zh.X0.5.R1.0.json"
    target.write_text("keep", encoding="utf-8")
    with pytest.raises(OutputExistsError):
        data_afp_command(["-b", str(g1_dir), "-o", str(tmp_path)], "xlt data afp")
    assert target.read_text(encoding="utf-8") == "keep"


def test_bad_bactrian_items(tmp_path):
    with pytest.raises(DataError, match="item 2"):
        afp.align_by_id({"en": [{"id": "a", "instruction": "x"}, {"id": "b", "instruction": 3}],
                         "zh": []}, ["en", "zh"])
    with pytest.raises(DataError, match="records but"):
        afp.align_by_id({"en": [{"id": "a", "instruction": "x"}], "zh": []}, ["en", "zh"])


def test_world_layout_inputs(tmp_path):
    """TaskExample / ParallelPair files (a synthetic world's layout) as generator input."""
    from xlt.afp.cli import data_afp_command
    from xlt.formats import ParallelPair, TaskExample, write_jsonl

    examples = [TaskExample(lang=lang, prompt=f"{lang} sentence {i} qw ?", completion=f" {lang}-answer{i}")
                for lang in ("qaa", "qab") for i in range(6)]
    write_jsonl(tmp_path / "dev.jsonl", examples)
    (tmp_path / "world.json").write_text(json.dumps({"languages": [{"code": "qaa", "name": "Alpha"},
                                                                   {"code": "qab", "name": "Beta"}]}))
    assert data_afp_command(["--task-file", str(tmp_path / "dev.jsonl"), "-l", "qaa", "qab", "-r", "2",
                             "--language-names", str(tmp_path / "world.json"), "-o", str(tmp_path / "o")],
                            "xlt data afp") == 0
    records = [json.loads(x) for x in (tmp_path / "o" / "AFP.qaa_qab.X0.5.R2.0.json").read_text().splitlines()]
    assert len(records) == 13
    for r in records:
        i = int(re.search(r"sentence (\d+)", r["clm_text"]).group(1))
        tgt = "qaa" if "Answer in Alpha: " in r["clm_text"] else "qab"
        assert r["clm_text"].endswith(f"Answer in {'Alpha' if tgt == 'qaa' else 'Beta'}: {tgt}-answer{i}")
        assert r["sent0"].startswith("qaa ") and r["sent1"] == r["sent0"].replace("qaa", "qab")
    write_jsonl(tmp_path / "par.jsonl", [ParallelPair("qaa", "qab", f"a{i}", f"b{i}") for i in range(4)])
    assert data_afp_command(["-m", "translation", "--parallel-file", str(tmp_path / "par.jsonl"), "-l", "qab",
                             "qaa", "--language-names", str(tmp_path / "world.json"), "-o", str(tmp_path / "o")],
                            "xlt data afp") == 0
    lines = (tmp_path / "o" / "AFP.qab-qaa-trans.C0.5.R1.0.json").read_text().splitlines()
    assert len(lines) == 5 and all(json.loads(x)["sent0"][0] in "ab" for x in lines)
    uneven = tmp_path / "uneven.jsonl"
    write_jsonl(uneven, examples[:-1])
    with pytest.raises(DataError, match="same number of items"):
        data_afp_command(["--task-file", str(uneven), "-l", "qaa", "qab", "--language-name", "qaa=A",
                          "--language-name", "qab=B", "-o", str(tmp_path / "u")], "xlt data afp")


#: The reference generator's language-name table (its lang_dict), transcribed entry by entry.
REFERENCE_LANGUAGE_NAMES = {
    "af": "Afrikaans", "ar": "Arabic", "az": "Azerbaijani", "bn": "Bengali", "cs": "Czech", "de": "German",
    "en": "English", "es": "Spanish", "et": "Estonian", "fa": "Persian", "fi": "Finnish", "fr": "French",
    "gl": "Galician", "gu": "Gujarati", "he": "Hebrew", "hi": "Hindi", "hr": "Croatian", "id": "Indonesian",
    "it": "Italian", "ja": "Japanese", "ka": "Georgian", "kk": "Kazakh", "km": "Khmer", "ko": "Korean",
    "lt": "Lithuanian", "lv": "Latvian", "mk": "Macedonian", "ml": "Malayalam", "mn": "Mongolian",
    "mr": "Marathi", "my": "Burmese", "ne": "Nepali", "nl": "Dutch", "pl": "Polish", "ps": "Pashto",
    "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "si": "Sinhala", "sl": "Slovene", "sv": "Swedish",
    "sw": "Swahili", "ta": "Tamil", "te": "Telugu", "th": "Thai", "tl": "Tagalog", "tr": "Turkish",
    "uk": "Ukrainian", "ur": "Urdu", "vi": "Vietnamese", "xh": "Xhosa", "zh": "Chinese",
}


def test_language_names_are_the_reference_table_for_all_52_codes():
    assert len(REFERENCE_LANGUAGE_NAMES) == 52
    assert afp.LANGUAGE_NAMES == REFERENCE_LANGUAGE_NAMES
    text, _ = afp.instruction_sample("Reci živjo.", "", "Živjo.", afp.language_name("sl", {}))
    assert text == "Reci živjo. Answer in Slovene: Živjo."
