"""AFP data generation at Bactrian-X scale: xlt's generator vs a straightforward one.

Writes random Bactrian-X-shaped input (2 languages x 67,017 records, English-like ASCII and
CJK text, a third of the items with an input field) to a temporary directory, then runs, in
separate processes and alternating, (A) ``xlt data afp`` and (B) a straightforward generator
that follows the reference algorithm record by record (dicts in memory, ``json.dumps`` per
record). Both write ``AFP.en_zh.X0.5.R3.0.json`` (repeat 3, about 135 MB); the files are
checked to be identical. Reports wall time, CPU time (user + system, less
sensitive to other load on a shared machine) and peak resident memory (medians).

    PYTHONPATH=src python benchmarks/bench_afp_data.py [--records 67017] [--repeats 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ASCII_WORDS = ("the of and to in is that for it as with was on be by this are or from at an "
               "which have not they you has more one were all their can but its also there "
               "write explain describe create list give provide summarize generate identify "
               "following sentence paragraph example words story idea data model").split()
CJK = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]


def _en(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(ASCII_WORDS) for _ in range(n_words)).capitalize() + "."


def _zh(rng: random.Random, n_chars: int) -> str:
    return "".join(rng.choice(CJK) for _ in range(n_chars)) + "。"


def write_input(directory: Path, records: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    en, zh = [], []
    for i in range(records):
        rid = f"alpaca-{i}" if i % 5 else f"dolly-{i}"
        has_input = i % 3 == 0
        en.append({"instruction": _en(rng, rng.randint(6, 16)),
                   "input": _en(rng, rng.randint(5, 25)) if has_input else "",
                   "id": rid, "output": _en(rng, rng.randint(35, 100))})
        zh.append({"instruction": _zh(rng, rng.randint(8, 25)),
                   "input": _zh(rng, rng.randint(8, 35)) if has_input else "",
                   "id": rid, "output": _zh(rng, rng.randint(55, 210))})
    rng.shuffle(zh)  # on-disk order differs between languages, as in Bactrian-X
    for lang, rows in (("en", en), ("zh", zh)):
        (directory / f"{lang}.json").write_text(json.dumps(rows, ensure_ascii=False, indent=1),
                                                encoding="utf-8")


# B: the reference algorithm written plainly (dicts per record, json.dumps per line).
STRAIGHTFORWARD = r'''
import json, random, sys, resource
bactrian, out = sys.argv[1], sys.argv[2]
random.seed(0)
langs = ["en", "zh"]; names = {"en": "English", "zh": "Chinese"}
data = {}
for lang in langs:
    with open(f"{bactrian}/{lang}.json", encoding="utf-8") as f:
        data[lang] = sorted(json.load(f), key=lambda r: r["id"])
n = len(data[langs[-1]])
pairs = []
for a, b in zip(data["en"], data["zh"]):
    if not a["instruction"] or not b["instruction"] or a["instruction"] == b["instruction"]:
        continue
    random.random()
    pairs.append([a["instruction"], b["instruction"]])
random.shuffle(pairs)
ids = [i % n for i in range(n * 4)]
random.shuffle(ids)
records, cursor, limit = [], 0, int(3.0 * n)
for i in ids:
    src = langs[random.randint(0, 1)]
    if random.random() < 0.5:
        other = [l for l in langs if l != src]
        tgt = other[random.randint(0, len(other) - 1)]
    else:
        tgt = src
    s = data[src][i]; o = data[tgt][i]["output"]
    prompt = (f"{s['instruction']} {s['input']} Answer in {names[tgt]}: " if s["input"]
              else f"{s['instruction']} Answer in {names[tgt]}: ")
    p = pairs[cursor]; cursor += 1
    if cursor >= len(pairs):
        random.shuffle(pairs); cursor = 0
    records.append({"sent0": p[0], "sent1": p[1], "clm_text": prompt + o, "clm_prompt_len": len(prompt)})
    if len(records) > limit:
        break
random.shuffle(records)
with open(out, "w", encoding="utf-8") as f:
    for r in records:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")
u = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"maxrss_kb": u.ru_maxrss, "cpu_s": u.ru_utime + u.ru_stime}))
'''

XLT = r'''
import json, resource, sys
from xlt.cli import main
status = main(["data", "afp", "-b", sys.argv[1], "-o", sys.argv[2], "-l", "en", "zh", "-r", "3",
               "-x", "0.5", "-s", "0", "--overwrite"])
u = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"status": status, "maxrss_kb": u.ru_maxrss, "cpu_s": u.ru_utime + u.ru_stime}))
'''


def run_one(code: str, bactrian: Path, out: Path) -> dict:
    import time

    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, str(bactrian), str(out)], capture_output=True,
                          text=True, env=env, check=True)
    wall = time.perf_counter() - started
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"seconds": wall, "cpu_seconds": stats["cpu_s"], "peak_rss_mb": stats["maxrss_kb"] / 1024}


def md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=67017)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="unused (CPU-only work); kept for uniformity")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "afp_data.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-afp-") as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        write_input(tmp / "in", args.records)
        input_mb = sum(p.stat().st_size for p in (tmp / "in").iterdir()) / 1e6
        results = {"xlt": [], "straightforward": []}
        for _ in range(args.repeats):
            results["xlt"].append(run_one(XLT, tmp / "in", tmp / "a"))
            (tmp / "b").mkdir(exist_ok=True)
            results["straightforward"].append(run_one(STRAIGHTFORWARD, tmp / "in", tmp / "b" / "out.json"))
        a = tmp / "a" / "AFP.en_zh.X0.5.R3.0.json"
        identical = md5(a) == md5(tmp / "b" / "out.json")
        output_mb = a.stat().st_size / 1e6
        with open(a, encoding="utf-8") as handle:
            n_records = sum(1 for _ in handle)
    summary = {
        "records_per_language": args.records, "input_mb": round(input_mb, 1),
        "output_mb": round(output_mb, 1), "output_records": n_records, "identical_output": identical,
        "repeats": args.repeats,
    }
    for name, runs in results.items():
        summary[name] = {"median_seconds": round(statistics.median(r["seconds"] for r in runs), 2),
                         "median_cpu_seconds": round(statistics.median(r["cpu_seconds"] for r in runs), 2),
                         "median_peak_rss_mb": round(statistics.median(r["peak_rss_mb"] for r in runs), 1),
                         "runs": runs}
    summary["speedup"] = round(summary["straightforward"]["median_seconds"] / summary["xlt"]["median_seconds"], 2)
    print(f"input {summary['input_mb']} MB, output {summary['output_mb']} MB "
          f"({n_records} records), identical: {identical}")
    for name in results:
        print(f"{name:>16}: {summary[name]['median_seconds']:.2f} s wall, "
              f"{summary[name]['median_cpu_seconds']:.2f} s CPU, "
              f"peak RSS {summary[name]['median_peak_rss_mb']:.0f} MB")
    print(f"ratio straightforward/xlt: {summary['speedup']:.2f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
