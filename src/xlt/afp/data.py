"""AFP cross-lingual instruction data: the generator of the paper, sample for sample.

AFP (Li et al., NAACL 2024) trains on JSON Lines records::

    {"sent0": ..., "sent1": ..., "clm_text": ..., "clm_prompt_len": ...}

``sent0``/``sent1`` is a translation pair for the contrastive loss and ``clm_text`` a
cross-lingual instruction-following sample ("{instruction} [{input}] Answer in {Target}:
{output}") whose first ``clm_prompt_len`` characters are the prompt. Three modes:

* ``bilingual`` — two languages (pivot first): instruction in one, answer in the same or the
  other (probability ``cross_probability``); the pair is an unrelated instruction translation.
* ``crosslingual`` — a pivot plus two or more languages: pivot->L, L->pivot and monolingual
  samples, each paired with a pivot->L instruction translation drawn with replacement.
* ``translation`` — a two-column TSV becomes "{src} Translate into {Tgt}: {tgt}" and
  "{src} = {tgt}" samples, the pair being the line itself (direction swapped with
  probability ``change_probability``).

The only randomness is Python's :mod:`random` seeded once, and every draw happens in the
order of the reference implementation, including draws whose result is ignored, so the same
inputs and seed give byte-identical files. Records are planned as small tuples and rendered
to text only when written, which keeps the memory low at Bactrian-X scale.

This module does no file I/O: :mod:`xlt.afp.cli` reads Bactrian-X / TSV files and writes.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping, Sequence

from xlt.errors import ConfigError, DataError

#: English names of the 52 Bactrian-X languages, the reference generator's table entry for entry
#: (``sl`` is "Slovene"), so that the prompts ("Answer in German:") are byte-identical; a name
#: can be overridden (``language_names=``).
LANGUAGE_NAMES: dict[str, str] = {
    "af": "Afrikaans", "ar": "Arabic", "az": "Azerbaijani", "bn": "Bengali", "cs": "Czech",
    "de": "German", "en": "English", "es": "Spanish", "et": "Estonian", "fa": "Persian",
    "fi": "Finnish", "fr": "French", "gl": "Galician", "gu": "Gujarati", "he": "Hebrew",
    "hi": "Hindi", "hr": "Croatian", "id": "Indonesian", "it": "Italian", "ja": "Japanese",
    "ka": "Georgian", "kk": "Kazakh", "km": "Khmer", "ko": "Korean", "lt": "Lithuanian",
    "lv": "Latvian", "mk": "Macedonian", "ml": "Malayalam", "mn": "Mongolian", "mr": "Marathi",
    "my": "Burmese", "ne": "Nepali", "nl": "Dutch", "pl": "Polish", "ps": "Pashto",
    "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "si": "Sinhala", "sl": "Slovene",
    "sv": "Swedish", "sw": "Swahili", "ta": "Tamil", "te": "Telugu", "th": "Thai",
    "tl": "Tagalog", "tr": "Turkish", "uk": "Ukrainian", "ur": "Urdu", "vi": "Vietnamese",
    "xh": "Xhosa", "zh": "Chinese",
}

MODES = ("bilingual", "crosslingual", "translation")

_ENCODE = json.encoder.encode_basestring  # the C encoder json.dumps(ensure_ascii=False) uses


@dataclass(frozen=True)
class AFPOptions:
    """Generator settings; the defaults are the reference generator's.

    ``repeat`` is a float (the reference CLI's type): ``int(repeat * N) + 1`` records are
    written, drawn from ``int(repeat) + 1`` shuffled passes. An ``int`` repeat (programmatic
    use) gives exactly ``repeat * N``. ``exact_count`` (off by default) writes
    ``int(repeat * N)`` records instead of one more.
    """

    mode: str = "bilingual"
    languages: tuple[str, ...] = ("en", "zh")
    cross_probability: float = 0.5
    change_probability: float = 0.5
    repeat: float = 1.0
    seed: int = 0
    exact_count: bool = False

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode {self.mode!r} (expected one of {', '.join(MODES)})")
        n = len(self.languages)
        if self.mode in ("bilingual", "translation") and n != 2:
            raise ConfigError(f"--mode {self.mode} needs exactly 2 languages (pivot first), got {n}")
        if self.mode == "crosslingual" and n < 3:
            raise ConfigError(f"--mode crosslingual needs 3 or more languages (pivot first), got {n}")
        if len(set(self.languages)) != n:
            raise ConfigError(f"languages must be distinct, got {' '.join(self.languages)}")
        for name in ("cross_probability", "change_probability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name.replace('_', '-')} must be in [0, 1], got {value}")
        if isinstance(self.repeat, bool) or not self.repeat > 0:
            raise ConfigError(f"repeat must be > 0, got {self.repeat}")


def output_name(options: AFPOptions, *, suffix: str = ".json") -> str:
    """The reference's file name, e.g. ``AFP.en_zh.X0.5.R3.0.json``.

    bilingual ``AFP.{l0}_{l1}.X{x}.R{r}``, crosslingual ``AFP.{l0}_..._{ln}.X{x}.C{c}.R{r}``,
    translation ``AFP.{l0}-{l1}-trans.C{c}.R{r}``; numbers printed as Python prints them
    (a float repeat reads ``R3.0``).
    """
    langs = options.languages
    x, c, r = options.cross_probability, options.change_probability, options.repeat
    if options.mode == "bilingual":
        stem = f"AFP.{'_'.join(langs)}.X{x}.R{r}"
    elif options.mode == "crosslingual":
        stem = f"AFP.{'_'.join(langs)}.X{x}.C{c}.R{r}"
    else:
        stem = f"AFP.{langs[0]}-{langs[1]}-trans.C{c}.R{r}"
    return stem + suffix


def language_name(code: str, names: Mapping[str, str] | None = None) -> str:
    """English name of ``code`` (``names`` first, then :data:`LANGUAGE_NAMES`)."""
    if names and code in names:
        return names[code]
    if code in LANGUAGE_NAMES:
        return LANGUAGE_NAMES[code]
    raise ConfigError(f"unknown language code {code!r}: no English name for the prompt "
                      f"(known: {', '.join(sorted(LANGUAGE_NAMES))}; give one with "
                      f"--language-name {code}=Name)")


# --------------------------------------------------------------------------------------------
# Inputs


def align_by_id(data: Mapping[str, list[dict]], languages: Sequence[str], *,
                sources: Mapping[str, str] | None = None) -> dict[str, list[dict]]:
    """Sort each language's records by ``id`` (as strings, like the reference) and check that
    the lists align: same length and the same id at every index.

    ``data``: language -> list of Bactrian-X objects {"instruction", "input", "id", "output"}.
    ``sources`` names the file of each language for error messages. Returns new sorted lists.
    """
    sources = sources or {}
    aligned: dict[str, list[dict]] = {}
    for lang in languages:
        rows = data[lang]
        where = sources.get(lang, lang)
        for k, row in enumerate(rows, 1):
            if not isinstance(row, dict):
                raise DataError(f"expected an object with instruction, input, id, output, got "
                                f"{type(row).__name__}", path=where, item=k)
            for field in ("id", "instruction", "input", "output"):
                value = row.get(field)
                if value is not None and not isinstance(value, str):
                    raise DataError(f"expected a string, got {type(value).__name__}", path=where,
                                    item=k, field=field)
            if not row.get("id"):
                raise DataError("missing id", path=where, item=k, field="id")
        aligned[lang] = sorted(rows, key=_id_key)
    first = languages[0]
    base = aligned[first]
    for lang in languages[1:]:
        other = aligned[lang]
        if len(other) != len(base):
            raise DataError(f"{len(other)} records but {sources.get(first, first)} has {len(base)}: "
                            "Bactrian-X files must hold the same ids in every language",
                            path=sources.get(lang, lang))
        for k, (a, b) in enumerate(zip(base, other)):
            if a["id"] != b["id"]:
                missing = sorted({r["id"] for r in base} - {r["id"] for r in other})[:1]
                hint = f" (id {missing[0]!r} of {sources.get(first, first)} is absent)" if missing else ""
                raise DataError(f"ids do not align with {sources.get(first, first)}: sorted position "
                                f"{k + 1} is {b['id']!r} here but {a['id']!r} there{hint}",
                                path=sources.get(lang, lang), field="id")
    return aligned


def bactrian_from_examples(examples: Iterable, languages: Sequence[str], *,
                           source: str = "<examples>") -> dict[str, list[dict]]:
    """Lay out :class:`~xlt.formats.TaskExample` records as Bactrian-X (one list per language).

    The k-th example of each language becomes item ``"item-%07d" % k`` with the prompt as
    instruction, an empty input and the completion (stripped) as output, so the files must
    hold the same items in the same order in every language (as a synthetic world's dev/test
    splits do). Unequal counts are a :class:`DataError`.
    """
    rows: dict[str, list[dict]] = {lang: [] for lang in languages}
    for example in examples:
        if example.lang in rows:
            k = len(rows[example.lang])
            rows[example.lang].append({"instruction": example.prompt, "input": "", "id": "item-%07d" % k,
                                       "output": example.completion.strip()})
    counts = {lang: len(r) for lang, r in rows.items()}
    if len(set(counts.values())) != 1 or not next(iter(counts.values())):
        raise DataError("task examples must hold the same number of items in every language, in the "
                        f"same order (got {', '.join(f'{k} {v}' for k, v in counts.items())})", path=source)
    return rows


def translation_pairs_from_parallel(pairs: Iterable, src_lang: str, tgt_lang: str) -> list[tuple[str, str]]:
    """(src_lang text, tgt_lang text) of :class:`~xlt.formats.ParallelPair` records in either
    direction between the two languages, in file order."""
    out = []
    for pair in pairs:
        if (pair.src_lang, pair.tgt_lang) == (src_lang, tgt_lang):
            out.append((pair.src, pair.tgt))
        elif (pair.src_lang, pair.tgt_lang) == (tgt_lang, src_lang):
            out.append((pair.tgt, pair.src))
    return out


def _id_key(row: dict) -> str:
    return row["id"]


def parse_translation_lines(lines: Iterable[str], *, source: str = "<tsv>") -> list[tuple[str, str]]:
    """Parse the translation TSV: each line stripped, split on tabs, columns 0 and 1 kept.

    A line without a non-empty second column is a :class:`DataError` naming the line (the
    reference crashes on it).
    """
    pairs = []
    for number, line in enumerate(lines, 1):
        parts = line.strip().split("\t")
        if len(parts) < 2 or not parts[0] or not parts[1]:
            raise DataError(f"expected 2 tab-separated columns (source, target), got {len(parts)} "
                            "non-empty" if len(parts) < 2 else
                            "expected 2 tab-separated columns (source, target), one is empty",
                            path=source, line=number)
        pairs.append((parts[0], parts[1]))
    if not pairs:
        raise DataError("no translation pairs (the file is empty)", path=source)
    return pairs


# --------------------------------------------------------------------------------------------
# Planning: every random draw, in the reference's order


def _below(rng: random.Random):
    """``f(n)`` drawing like ``rng.randint(0, n - 1)``: in CPython, ``randint(a, b)`` is
    ``a + rng._randbelow(b - a + 1)``, so calling ``_randbelow`` directly consumes the same
    bits and skips two layers of argument checks (the plan loop's hot spot)."""
    below = getattr(rng, "_randbelow", None)
    if below is None:  # pragma: no cover - other Python implementations
        return lambda n: rng.randint(0, n - 1)
    return below


def _schedule(rng: random.Random, n: int, repeat: float, exact_count: bool) -> tuple[list[int], int]:
    """Shuffled id pool and the record limit (the loop stops once the count exceeds it)."""
    passes = repeat if isinstance(repeat, int) else int(repeat) + 1
    pool = list(range(n)) * passes
    rng.shuffle(pool)
    limit = int(repeat * n)
    if exact_count:
        limit -= 1
    return pool, limit


def _instruction_pairs(rng: random.Random, first: list[dict], second: list[dict]) -> list[int]:
    """Indices of rows whose two instructions are non-empty and differ (one draw per kept row)."""
    kept = []
    for k, (a, b) in enumerate(zip(first, second)):
        s0, s1 = a.get("instruction"), b.get("instruction")
        if not s0 or not s1 or s0 == s1:
            continue
        rng.random()  # the reference's "reverse the pair?" draw, against probability 0
        kept.append(k)
    return kept


def plan_bilingual(data: Mapping[str, list[dict]], options: AFPOptions) -> list[tuple[int, int, int, int]]:
    """Records as ``(item, src, tgt, pair_item)`` (language indices into ``options.languages``)."""
    rng = random.Random(options.seed)
    langs = options.languages
    l0, l1 = langs
    pairs = _instruction_pairs(rng, data[l0], data[l1])
    if not pairs:
        raise DataError("no usable translation pairs: every instruction is empty or identical "
                        "across the two languages")
    rng.shuffle(pairs)
    n = len(data[langs[-1]])
    pool, limit = _schedule(rng, n, options.repeat, options.exact_count)
    nlang = len(langs)
    x = options.cross_probability
    below, rand = _below(rng), rng.random
    others = [[j for j in range(nlang) if j != i] for i in range(nlang)]
    plan = []
    cursor = 0
    for item in pool:
        src = below(nlang)
        if rand() < x:
            cand = others[src]
            tgt = cand[below(len(cand))]
        else:
            tgt = src
        plan.append((item, src, tgt, pairs[cursor]))
        cursor += 1
        if cursor >= len(pairs):  # exhausted: reshuffle at once, before the next draws
            rng.shuffle(pairs)
            cursor = 0
        if len(plan) > limit:
            break
    rng.shuffle(plan)
    return plan


def plan_crosslingual(data: Mapping[str, list[dict]], options: AFPOptions):
    """Records as ``(item, src, tgt, pair_lang, pair_item)``."""
    rng = random.Random(options.seed)
    langs = options.languages
    nlang = len(langs)
    pair_lists = {}
    for j in range(1, nlang):
        pair_lists[j] = _instruction_pairs(rng, data[langs[0]], data[langs[j]])
        if not pair_lists[j]:
            raise DataError(f"no usable {langs[0]}-{langs[j]} translation pairs: every instruction "
                            "is empty or identical across the two languages")
    n = len(data[langs[-1]])
    pool, limit = _schedule(rng, n, options.repeat, options.exact_count)
    x, c = options.cross_probability, options.change_probability
    below, rand = _below(rng), rng.random
    plan = []
    for item in pool:
        tgt = 1 + below(nlang - 1)
        pair_lang = tgt
        if rand() < x:
            if rand() < c:
                src, tgt = tgt, 0
            else:
                src = 0
        else:
            src = tgt = below(nlang)
        pairs = pair_lists[pair_lang]
        plan.append((item, src, tgt, pair_lang, pairs[below(len(pairs))]))  # = rng.choice(pairs)
        if len(plan) > limit:
            break
    rng.shuffle(plan)
    return plan


def plan_translation(n_pairs: int, options: AFPOptions) -> list[tuple[int, int, int]]:
    """Records as ``(line, swapped, template)``."""
    rng = random.Random(options.seed)
    pool, limit = _schedule(rng, n_pairs, options.repeat, options.exact_count)
    c = options.change_probability
    below, rand = _below(rng), rng.random
    plan = []
    for item in pool:
        swapped = 1 if rand() < c else 0
        template = below(2)
        plan.append((item, swapped, template))
        if len(plan) > limit:
            break
    rng.shuffle(plan)
    return plan


# --------------------------------------------------------------------------------------------
# Rendering


def _line(sent0: str, sent1: str, text: str, prompt_len: int) -> str:
    # Byte-identical to json.dumps({...}, ensure_ascii=False) + "\n" with the reference's key order.
    return (f'{{"sent0": {_ENCODE(sent0)}, "sent1": {_ENCODE(sent1)}, '
            f'"clm_text": {_ENCODE(text)}, "clm_prompt_len": {prompt_len}}}\n')


def instruction_sample(instruction: str, input_text: str, output: str, target_name: str) -> tuple[str, int]:
    """``("{instruction} [{input}] Answer in {target_name}: {output}", prompt length in chars)``."""
    if input_text:
        prompt = f"{instruction} {input_text} Answer in {target_name}: "
    else:
        prompt = f"{instruction} Answer in {target_name}: "
    return prompt + output, len(prompt)


def render_bilingual(plan, data: Mapping[str, list[dict]], options: AFPOptions,
                     language_names: Mapping[str, str] | None = None) -> Iterator[str]:
    """JSON Lines of a bilingual or crosslingual plan, one string per record."""
    langs = options.languages
    rows = [data[lang] for lang in langs]
    names = [language_name(lang, language_names) for lang in langs]
    pivot = rows[0]
    encoded_pairs: dict[tuple[int, int], str] = {}  # each pair recurs ~repeat times: encode once
    for entry in plan:
        if len(entry) == 4:
            item, src, tgt, pair_item = entry
            pair_rows = rows[1]
        else:
            item, src, tgt, pair_lang, pair_item = entry
            pair_rows = rows[pair_lang]
        key = (len(entry) == 4 or pair_lang, pair_item)
        head = encoded_pairs.get(key)
        if head is None:
            head = encoded_pairs[key] = (f'{{"sent0": {_ENCODE(pivot[pair_item]["instruction"])}, '
                                         f'"sent1": {_ENCODE(pair_rows[pair_item]["instruction"])}, ')
        source = rows[src][item]
        text, prompt_len = instruction_sample(source["instruction"] or "", source.get("input") or "",
                                              rows[tgt][item].get("output") or "", names[tgt])
        yield f'{head}"clm_text": {_ENCODE(text)}, "clm_prompt_len": {prompt_len}}}\n'



def render_translation(plan, pairs: Sequence[tuple[str, str]], options: AFPOptions,
                       language_names: Mapping[str, str] | None = None) -> Iterator[str]:
    """JSON Lines of a translation plan."""
    names = [language_name(lang, language_names) for lang in options.languages]
    for item, swapped, template in plan:
        src, tgt = pairs[item]
        tgt_name = names[1]
        if swapped:
            src, tgt = tgt, src
            tgt_name = names[0]
        prompt = f"{src} Translate into {tgt_name}: " if template == 0 else f"{src} = "
        yield _line(src, tgt, prompt + tgt, len(prompt))


def generate(options: AFPOptions, *, data: Mapping[str, list[dict]] | None = None,
             translation_pairs: Sequence[tuple[str, str]] | None = None,
             language_names: Mapping[str, str] | None = None) -> Iterator[str]:
    """Plan and render a whole file; yields its JSON lines in output order.

    ``data`` (bilingual, crosslingual): language -> Bactrian-X records already aligned with
    :func:`align_by_id`. ``translation_pairs`` (translation): (languages[0] text,
    languages[1] text) tuples, e.g. from :func:`parse_translation_lines`.
    """
    for lang in options.languages:
        language_name(lang, language_names)  # unknown codes fail before any work
    if options.mode == "translation":
        if not translation_pairs:
            raise ConfigError("--mode translation needs a translation file (--translation-file)")
        plan = plan_translation(len(translation_pairs), options)
        return render_translation(plan, translation_pairs, options, language_names)
    if data is None:
        raise ConfigError(f"--mode {options.mode} needs Bactrian-X data (--bactrian-dir)")
    plan = plan_bilingual(data, options) if options.mode == "bilingual" else plan_crosslingual(data, options)
    return render_bilingual(plan, data, options, language_names)


def plan_direction_counts(plan, options: AFPOptions) -> dict[str, int]:
    """``{"en->zh": count, ...}`` of a bilingual, crosslingual or translation plan."""
    langs = options.languages
    counts: dict[str, int] = {}
    for entry in plan:
        if options.mode == "translation":
            src, tgt = (1, 0) if entry[1] else (0, 1)
        else:
            src, tgt = entry[1], entry[2]
        key = f"{langs[src]}->{langs[tgt]}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))
