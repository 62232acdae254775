"""Wrong-language rate: the share of generated outputs not identified as the expected language.

The identifier is py3langid (a maintained fork of langid.py, Lui & Baldwin, ACL 2012: naive
Bayes over byte n-grams), whose model (``py3langid/data/model.npz.xz``) ships inside its wheel,
so nothing is downloaded at run time. It knows about 140 languages, named by ISO 639-1 codes
where one exists (``de``, ``zh``) and ISO 639-3 otherwise (``ary``, ``yue``).

Expected languages may be given as ISO 639-1 (``de``), ISO 639-3 / 639-2 (``deu``, ``ger``),
FLORES-200 (``deu_Latn``; the script is ignored) or a tag with a region (``pt-BR``). FLORES
codes of individual languages inside a macrolanguage map to the macrolanguage the identifier
knows (``arb``, ``acm``, ``apc`` ... -> ``ar``; ``cmn`` -> ``zh``; ``nob`` -> ``no``; ``pes``, ``prs`` ->
``fa``; ``swh`` -> ``sw``; ``zsm`` -> ``ms``; see :data:`MACRO_MEMBERS`), so Egyptian and Moroccan
Arabic, which it knows apart (``arz``, ``ary``), count as their own languages.
"""

from __future__ import annotations

import functools
import re
from typing import Sequence

from xlt.errors import ConfigError

PACKAGE = "py3langid"

#: ISO 639-3 (and 639-2/T) -> the identifier's ISO 639-1 label.
ISO639_3_TO_1 = {
    "afr": "af", "amh": "am", "arg": "an", "ara": "ar", "asm": "as", "aze": "az", "bak": "ba", "bel": "be",
    "bul": "bg", "ben": "bn", "bre": "br", "bos": "bs", "cat": "ca", "ces": "cs", "cym": "cy", "dan": "da",
    "deu": "de", "dzo": "dz", "ell": "el", "eng": "en", "epo": "eo", "spa": "es", "est": "et", "eus": "eu",
    "fas": "fa", "fin": "fi", "fao": "fo", "fra": "fr", "fry": "fy", "gle": "ga", "gla": "gd", "glg": "gl",
    "guj": "gu", "hau": "ha", "heb": "he", "hin": "hi", "hrv": "hr", "hat": "ht", "hun": "hu", "hye": "hy",
    "ind": "id", "ibo": "ig", "isl": "is", "ita": "it", "jpn": "ja", "jav": "jv", "kat": "ka", "kaz": "kk",
    "khm": "km", "kan": "kn", "kor": "ko", "kur": "ku", "kir": "ky", "lat": "la", "ltz": "lb", "lug": "lg",
    "lin": "ln", "lao": "lo", "lit": "lt", "lav": "lv", "mlg": "mg", "mkd": "mk", "mal": "ml", "mon": "mn",
    "mar": "mr", "msa": "ms", "mlt": "mt", "mya": "my", "nep": "ne", "nld": "nl", "nno": "nn", "nor": "no",
    "oci": "oc", "orm": "om", "ori": "or", "pan": "pa", "pol": "pl", "pus": "ps", "por": "pt", "que": "qu",
    "ron": "ro", "rus": "ru", "kin": "rw", "san": "sa", "sme": "se", "sin": "si", "slk": "sk", "slv": "sl",
    "sna": "sn", "som": "so", "sqi": "sq", "srp": "sr", "sot": "st", "swe": "sv", "swa": "sw", "tam": "ta",
    "tel": "te", "tgk": "tg", "tha": "th", "tuk": "tk", "tgl": "tl", "tur": "tr", "tat": "tt", "uig": "ug",
    "ukr": "uk", "urd": "ur", "uzb": "uz", "vie": "vi", "vol": "vo", "wln": "wa", "xho": "xh", "yor": "yo",
    "zho": "zh", "zul": "zu",
    # ISO 639-2/B spellings
    "alb": "sq", "arm": "hy", "baq": "eu", "bur": "my", "chi": "zh", "cze": "cs", "dut": "nl", "fre": "fr",
    "geo": "ka", "ger": "de", "gre": "el", "ice": "is", "mac": "mk", "may": "ms", "per": "fa", "rum": "ro",
    "slo": "sk", "wel": "cy",
    # ISO 639-1 spellings the identifier does not use
    "nb": "no",
}

#: Individual languages (FLORES-200 codes) -> the macrolanguage label the identifier has.
MACRO_MEMBERS = {
    "arb": "ar", "acm": "ar", "acq": "ar", "aeb": "ar", "ajp": "ar", "apc": "ar", "ars": "ar",
    "azj": "az", "azb": "az", "cmn": "zh", "ekk": "et", "fil": "tl", "gaz": "om", "khk": "mn", "kmr": "ku",
    "lvs": "lv", "nob": "no", "npi": "ne", "ory": "or", "pbt": "ps", "pes": "fa", "plt": "mg", "prs": "fa",
    "quy": "qu", "als": "sq", "swh": "sw", "uzn": "uz", "zsm": "ms",
}

#: Label of an output with no text (it never matches an expected language).
UNDETERMINED = "und"

_CODE = re.compile(r"^([A-Za-z]{2,3})(?:[_-][A-Za-z0-9]+)*$")


@functools.lru_cache(maxsize=1)
def _identifier():
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError:
        raise ConfigError(f"the wrong-language rate needs the {PACKAGE} package "
                          "(pip install 'xlt[eval]')") from None
    return LanguageIdentifier.from_model_file(MODEL_FILE)


def supported_languages() -> list[str]:
    """The identifier's labels (ISO 639-1 where one exists, else ISO 639-3), sorted."""
    return sorted(_identifier().labels)


def identifier_label(language: str) -> str:
    """The identifier's label for ``language`` (ISO 639-1/2/3, FLORES ``xxx_Scrp``, ``xx-RR``).

    An unknown code, or a language the identifier lacks, is a one-line :class:`ConfigError`.
    """
    match = _CODE.match(language.strip())
    if not match:
        raise ConfigError(f"language {language!r}: not an ISO 639 or FLORES code (e.g. 'de', 'deu', 'deu_Latn')")
    base = match.group(1).lower()
    label = MACRO_MEMBERS.get(base) or ISO639_3_TO_1.get(base) or base
    if label not in set(_identifier().labels):
        raise ConfigError(f"language {language!r}: the language identifier ({PACKAGE}) does not know it "
                          f"(its {len(_identifier().labels)} languages: xlt.eval.language_id.supported_languages())")
    return label


def identify_languages(texts: Sequence[str]) -> list[str]:
    """The identifier's label of each text; ``"und"`` for an empty or blank one."""
    identifier = _identifier()
    return [identifier.classify(text)[0] if text.strip() else UNDETERMINED for text in texts]


def wrong_language_rate(outputs: Sequence[str], expected: str | Sequence[str], *,
                        identified: Sequence[str] | None = None) -> float:
    """Share of ``outputs`` not identified as their expected language (an empty output counts as wrong).

    ``expected``: one language for all outputs, or one per output (any code
    :func:`identifier_label` reads). ``identified``: labels from :func:`identify_languages`, if
    already computed. NaN for no outputs.
    """
    if isinstance(expected, str):
        expected = [expected] * len(outputs)
    if len(expected) != len(outputs):
        raise ConfigError(f"{len(outputs)} outputs but {len(expected)} expected languages")
    if not outputs:
        return float("nan")
    labels = {code: identifier_label(code) for code in set(expected)}
    if identified is None:
        identified = identify_languages(outputs)
    wrong = sum(got != labels[want] for got, want in zip(identified, expected))
    return wrong / len(outputs)


WRONG_LANGUAGE_MODES = ("auto", "on", "off")
_warned: set[str] = set()  # the warnings already given (one per message and process)


def expected_labels(languages, mode: str = "auto") -> dict[str, str | None]:
    """The identifier's label of each of ``languages`` (``None`` where no rate is computed).

    ``mode``: ``on`` computes the rate for every language, a language the identifier lacks (or a
    missing package) being a :class:`ConfigError`; ``auto`` computes it where it can and logs one
    warning naming the languages left out (or the missing package), once per process; ``off``
    computes none.
    """
    import logging

    if mode not in WRONG_LANGUAGE_MODES:
        raise ConfigError(f"wrong-language mode must be one of {', '.join(WRONG_LANGUAGE_MODES)}, got {mode!r}")
    languages = list(dict.fromkeys(languages))
    if mode == "off" or not languages:
        return {lang: None for lang in languages}
    if mode == "on":
        return {lang: identifier_label(lang) for lang in languages}
    def warn_once(message: str) -> None:
        if message not in _warned:
            _warned.add(message)
            logging.getLogger("xlt").warning(message)

    try:
        _identifier()
    except ConfigError as exc:
        warn_once(f"xlt: no wrong-language rate: {exc}")
        return {lang: None for lang in languages}
    out: dict[str, str | None] = {}
    for lang in languages:
        try:
            out[lang] = identifier_label(lang)
        except ConfigError:
            out[lang] = None
    missing = [lang for lang, label in out.items() if label is None]
    if missing:
        warn_once(f"xlt: no wrong-language rate for {', '.join(missing)}: the language identifier ({PACKAGE}) "
                  f"does not know {'it' if len(missing) == 1 else 'them'}")
    return out
