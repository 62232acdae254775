"""Wrong-language rate: code mapping, and the identifier on sentences of known language."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("py3langid")

from xlt.errors import ConfigError  # noqa: E402
from xlt.eval.language_id import (ISO639_3_TO_1, MACRO_MEMBERS, identifier_label,  # noqa: E402
                                  identify_languages, supported_languages, wrong_language_rate)

# Real sentences, one per language (FLORES-200 code), written for this test.
SENTENCES = {
    "eng_Latn": "The children walked to school together because it was raining all morning.",
    "deu_Latn": "Die Kinder sind zusammen zur Schule gegangen, weil es den ganzen Morgen geregnet hat.",
    "fra_Latn": "Les enfants sont allés à l'école ensemble parce qu'il pleuvait toute la matinée.",
    "spa_Latn": "Los niños caminaron juntos a la escuela porque llovió toda la mañana.",
    "rus_Cyrl": "Дети вместе пошли в школу, потому что всё утро шёл дождь.",
    "zho_Hans": "因为整个上午都在下雨，孩子们一起走路去学校。",
    "jpn_Jpan": "午前中ずっと雨が降っていたので、子供たちは一緒に学校へ歩いて行きました。",
    "arb_Arab": "مشى الأطفال إلى المدرسة معاً لأن المطر كان يهطل طوال الصباح.",
    "hin_Deva": "बच्चे एक साथ स्कूल गए क्योंकि पूरी सुबह बारिश हो रही थी।",
    "swh_Latn": "Watoto walitembea pamoja kwenda shuleni kwa sababu mvua ilinyesha asubuhi yote.",
}


def test_every_mapped_label_is_one_the_identifier_knows():
    labels = set(supported_languages())
    assert len(labels) > 100
    assert set(ISO639_3_TO_1.values()) <= labels and set(MACRO_MEMBERS.values()) <= labels


@pytest.mark.parametrize("code,label", [
    ("de", "de"), ("deu", "de"), ("ger", "de"), ("deu_Latn", "de"), ("pt-BR", "pt"), ("zho_Hant", "zh"),
    ("cmn", "zh"), ("arb_Arab", "ar"), ("ary_Arab", "ary"), ("nob_Latn", "no"), ("nb", "no"),
    ("swh_Latn", "sw"), ("yue_Hant", "yue"),
])
def test_codes_map_to_the_identifiers_labels(code, label):
    assert identifier_label(code) == label


@pytest.mark.parametrize("code,message", [
    ("qaa", "language 'qaa': the language identifier (py3langid) does not know it"),
    ("haw_Latn", "language 'haw_Latn': the language identifier"),
    ("german", "not an ISO 639 or FLORES code"),
])
def test_unsupported_language_is_one_line(code, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        identifier_label(code)
    assert "\n" not in str(info.value)


def test_sentences_of_known_language_are_identified():
    codes = list(SENTENCES)
    got = identify_languages([SENTENCES[c] for c in codes])
    assert got == [identifier_label(c) for c in codes]
    assert wrong_language_rate([SENTENCES[c] for c in codes], codes) == 0.0


def test_wrong_language_rate_counts_outputs_in_another_language():
    # a model asked for German that answers twice in English, once in French, once with nothing
    outputs = [SENTENCES["deu_Latn"], SENTENCES["eng_Latn"], "Der Hund schläft im Garten, und die Katze auch.",
               SENTENCES["fra_Latn"], SENTENCES["eng_Latn"], "  "]
    assert wrong_language_rate(outputs, "de") == pytest.approx(4 / 6)
    assert identify_languages(outputs)[-1] == "und"
    # per-output expectations, given precomputed labels
    expected = ["deu_Latn", "eng", "de", "fra", "deu", "en"]
    assert wrong_language_rate(outputs, expected) == pytest.approx(2 / 6)
    assert wrong_language_rate(outputs, expected, identified=["de", "en", "de", "fr", "en", "en"]) == \
        pytest.approx(1 / 6)
    assert math.isnan(wrong_language_rate([], "de"))
    with pytest.raises(ConfigError, match="3 outputs but 2 expected languages"):
        wrong_language_rate(["a", "b", "c"], ["de", "en"])


def test_without_the_package_auto_warns_once_and_on_is_an_error(monkeypatch, caplog):
    import sys

    import xlt.eval.language_id as language_id

    monkeypatch.setitem(sys.modules, "py3langid.langid", None)  # import fails as if not installed
    monkeypatch.setattr(language_id, "_warned", set())
    language_id._identifier.cache_clear()
    try:
        with caplog.at_level("WARNING", logger="xlt"):
            assert language_id.expected_labels(["deu_Latn", "eng_Latn"], "auto") == \
                {"deu_Latn": None, "eng_Latn": None}
            language_id.expected_labels(["fra_Latn"], "auto")  # warned once per process
        assert len(caplog.records) == 1 and "pip install 'xlt[eval]'" in caplog.records[0].message
        with pytest.raises(ConfigError, match="needs the py3langid package"):
            language_id.expected_labels(["deu_Latn"], "on")
        assert language_id.expected_labels(["deu_Latn"], "off") == {"deu_Latn": None}
        with pytest.raises(ConfigError, match="must be one of auto, on, off"):
            language_id.expected_labels(["deu_Latn"], "yes")
    finally:
        language_id._identifier.cache_clear()
