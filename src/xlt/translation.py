"""How a translation pair meets a tokenizer: language tokens and prompts.

Both the LSLo trainer (:mod:`xlt.lslo`) and MT evaluation (:mod:`xlt.eval.mt`) encode
translation data the same way, so the conventions live here, below both.

Encoder-decoder models (M2M-100 / NLLB, as the reference implementation's fairseq setup): a
text is ``[lang] tokens </s>`` (:func:`encode_texts`), where a language's token is the code
itself (NLLB, ``deu_Latn``) or ``__code__`` (M2M-100, ``__de__``) (:func:`language_token`).
Decoder-only models see a :class:`TranslationPrompt` (``"{src_lang}: {src}\\n{tgt_lang}:"`` by
default) and continue it with the target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from xlt.errors import ConfigError, ModelError


def language_token(tokenizer, code: str) -> str:
    """The tokenizer's token for language ``code`` (``code`` itself, or ``__code__``)."""
    vocab = tokenizer.get_vocab()
    for candidate in (code, f"__{code}__"):
        if candidate in vocab:
            return candidate
    raise ModelError(f"tokenizer has no token for language {code!r} (expected a token {code!r} or "
                     f"'__{code}__'; an NLLB-style tokenizer must be built with this language code)")


def language_token_id(tokenizer, code: str) -> int:
    return int(tokenizer.convert_tokens_to_ids(language_token(tokenizer, code)))


def encode_texts(tokenizer, texts: Sequence[str], lang: str, max_length: int) -> list[list[int]]:
    """``[lang] tokens </s>`` for each text, truncated to ``max_length`` tokens in all."""
    if max_length < 3:
        raise ConfigError(f"max length must be >= 3 tokens, got {max_length}")
    lang_id = language_token_id(tokenizer, lang)
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ModelError("tokenizer has no eos token")
    bodies = tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
    return [[lang_id] + list(body[:max_length - 2]) + [eos] for body in bodies]


#: Default translation prompt for decoder-only models: the source line, then the target
#: language's name and a colon; the model continues with `` <target></s>``.
DEFAULT_PROMPT_TEMPLATE = "{src_lang}: {src}\n{tgt_lang}:"


@dataclass
class TranslationPrompt:
    """How a decoder-only model sees a translation pair: a prompt it continues with the target.

    ``prompt = template.format(src_lang=name(src), tgt_lang=name(tgt), src=source text)``, encoded
    with the tokenizer's own leading special tokens (BOS where the tokenizer adds one); the
    continuation is ``target_prefix + target`` followed by EOS. ``language_names`` maps codes
    to the names shown in the prompt (default: the code itself), e.g. ``{"fra_Latn": "French"}``.
    A literal ``\\n`` in the template is a newline (handy on the command line). Training masks the
    prompt out of the loss; generation continues the prompt and keeps the first line of the
    continuation.
    """

    template: str = DEFAULT_PROMPT_TEMPLATE
    language_names: dict[str, str] = field(default_factory=dict)
    target_prefix: str = " "

    def __post_init__(self):
        import string

        self.template = str(self.template).replace("\\n", "\n")
        self.language_names = {str(k): str(v) for k, v in (self.language_names or {}).items()}
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(self.template) if f is not None]
        except ValueError as exc:
            raise ConfigError(f"prompt template {self.template!r}: {exc}") from None
        unknown = sorted(set(fields) - {"src", "src_lang", "tgt_lang"})
        if unknown:
            raise ConfigError(f"prompt template: unknown placeholder {{{unknown[0]}}} (expected {{src}}, "
                              "{src_lang}, {tgt_lang})")
        for needed in ("src", "tgt_lang"):
            if needed not in fields:
                raise ConfigError(f"prompt template {self.template!r} has no {{{needed}}} placeholder")

    def name(self, lang: str) -> str:
        return self.language_names.get(lang, lang)

    def text(self, src: str, src_lang: str, tgt_lang: str) -> str:
        return self.template.format(src=src, src_lang=self.name(src_lang), tgt_lang=self.name(tgt_lang))

    def encode_prompts(self, tokenizer, items: Sequence[tuple[str, str, str]], max_length: int) -> list[list[int]]:
        """Token ids of the prompt of each ``(text, src_lang, tgt_lang)``, at most ``max_length``.

        An over-long prompt keeps its template and loses the end of the source text.
        """
        if not items:
            return []
        lead = _leading_special_tokens(tokenizer)
        texts = [self.text(*item) for item in items]
        encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
        out = []
        for (src, s, t), ids in zip(items, encoded):
            ids = lead + list(ids)
            source = src
            for _ in range(8):
                if len(ids) <= max_length:
                    break
                body = tokenizer(source, add_special_tokens=False)["input_ids"]
                if not body:
                    break
                keep = max(0, len(body) - (len(ids) - max_length))
                source = tokenizer.decode(body[:keep], skip_special_tokens=True)
                ids = lead + list(tokenizer(self.text(source, s, t), add_special_tokens=False)["input_ids"])
            if len(ids) > max_length:
                raise ConfigError(f"max source length {max_length} is too short for the prompt template "
                                  f"{self.template!r} ({len(ids)} tokens without the source text)")
            out.append(ids)
        return out

    def encode_targets(self, tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
        """``target_prefix + text`` then EOS, at most ``max_length`` tokens."""
        if max_length < 2:
            raise ConfigError(f"max target length must be >= 2 tokens, got {max_length}")
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ModelError("tokenizer has no eos token")
        if not texts:
            return []
        bodies = tokenizer([self.target_prefix + t for t in texts], add_special_tokens=False)["input_ids"]
        return [list(body[:max_length - 1]) + [eos] for body in bodies]

    def to_dict(self) -> dict[str, Any]:
        return {"template": self.template, "language_names": dict(self.language_names),
                "target_prefix": self.target_prefix}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "TranslationPrompt":
        data = dict(data or {})
        unknown = sorted(set(data) - {"template", "language_names", "target_prefix"})
        if unknown:
            raise ConfigError(f"translation prompt: unknown key(s) {', '.join(unknown)}")
        return cls(**data)


def _leading_special_tokens(tokenizer) -> list[int]:
    """The special tokens the tokenizer puts before a text (``[bos]`` for Llama, ``[]`` for Qwen)."""
    with_special = tokenizer("a")["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    for k in range(len(with_special) - len(plain) + 1):
        if with_special[k:k + len(plain)] == plain:
            return list(with_special[:k])
    return []
