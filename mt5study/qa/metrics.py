"""Extractive-QA scores: SQuAD v1.1's exact match and F1, and MLQA's language-aware variant.

The rules (from the official scripts: SQuAD v1.1's evaluate-v1.1.py, Rajpurkar et al. 2016;
MLQA's mlqa_evaluation_v1.py, Lewis et al. 2020, github.com/facebookresearch/MLQA):

- normalise = lower-case -> drop punctuation -> drop articles -> split into tokens -> join;
- SQuAD: punctuation is ASCII's (`string.punctuation`), articles are English a/an/the, tokens
  are whitespace-separated;
- MLQA: punctuation is every Unicode character of category P* plus ASCII's; articles per
  language (en, es, de, vi, ar; none for hi, zh); tokens are whitespace-separated, except for
  zh, where every CJK ideograph (U+4E00-U+9FA5) and every punctuation character is a token of
  its own and the runs between them are split on whitespace;
- exact match: normalised strings equal; F1: harmonic mean of precision and recall of the
  multiset of shared tokens (0 when none is shared, so two empty answers score F1 0 in v1.1);
- each question scores its best reference; totals are means in percent.

MLQA's script refuses languages outside its seven. Here (an mt5study extension, marked as such in
the tables): ja and th get character tokens like zh, over their scripts (kana, CJK ideographs of
every block, Thai); any other language gets whitespace tokens and no article removal.

Maintained implementations checked: Hugging Face `evaluate`'s "squad" metric wraps the official
v1.1 script but fetches it from the hub at run time (unreachable offline); torchmetrics 1.9's
`squad` agrees with v1.1 except on empty answers, where it follows SQuAD 2.0 (F1 1 when both
normalise to nothing; v1.1 gives 0), and has no MLQA rules. Neither is a dependency: both rules
are written here and tested on hand-checked cases (tests/test_qa_metrics.py, which also compares
with torchmetrics where it is installed).
"""

from __future__ import annotations

import re
import string
import sys
import unicodedata
from collections import Counter
from collections.abc import Sequence

SQUAD_PUNCT = frozenset(string.punctuation)
UNICODE_PUNCT = frozenset(
    chr(i) for i in range(sys.maxunicode + 1) if unicodedata.category(chr(i)).startswith("P")
) | SQUAD_PUNCT

MLQA_LANGS = ("en", "es", "hi", "vi", "de", "ar", "zh")
ARTICLES = {  # MLQA's lists (hi, zh: none); applied on word boundaries
    "en": r"\b(a|an|the)\b",
    "es": r"\b(un|una|unos|unas|el|la|los|las)\b",
    "vi": r"\b(của|là|cái|chiếc|những)\b",
    "de": r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b",
    "ar": r"\sال^|ال",  # MLQA's pattern as published: in effect, every "ال" is removed
}
# Characters that are tokens by themselves. zh: MLQA's range exactly; ja, th: the extension.
_CHAR_TOKENS = {
    "zh": re.compile(r"[\u4e00-\u9fa5]"),
    "ja": re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f]"),
    "th": re.compile(r"[\u0e00-\u0e7f]"),
}


def base_lang(lang: str | None) -> str | None:
    """'zh-Hant' -> 'zh', 'pt_BR' -> 'pt'; None stays None (SQuAD's English rules)."""
    if lang is not None and (not isinstance(lang, str) or not lang.strip()):
        raise ValueError(f"lang must be a language code such as 'en' or 'zh-Hant', or None, got {lang!r}")
    return None if lang is None else re.split(r"[-_]", lang)[0].lower()


def _check_text(name: str, value) -> None:
    """Answers are strings: anything else is refused here, not as an AttributeError in .lower()."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__}: {value!r}")


def rules(lang: str | None) -> str:
    """Which normalisation `lang` gets: squad, mlqa, or mlqa-extension."""
    lang = base_lang(lang)
    return "squad" if lang is None else "mlqa" if lang in MLQA_LANGS else "mlqa-extension"


def _segment(text: str, chars: re.Pattern) -> list[str]:
    """Single-character tokens for `chars` and punctuation; whitespace tokens in between."""
    tokens: list[str] = []
    run: list[str] = []
    for ch in text:
        if chars.match(ch) or ch in UNICODE_PUNCT:
            tokens.extend("".join(run).split())
            run = []
            tokens.append(ch)
        else:
            run.append(ch)
    tokens.extend("".join(run).split())
    return tokens


def normalize_tokens(text: str, lang: str | None = None) -> list[str]:
    """The tokens that exact match and F1 compare (see the module docstring for the rules)."""
    lang = base_lang(lang)
    text = text.lower()
    if lang is None:
        text = "".join(ch for ch in text if ch not in SQUAD_PUNCT)
        return re.sub(ARTICLES["en"], " ", text).split()
    text = "".join(ch for ch in text if ch not in UNICODE_PUNCT)
    if lang in ARTICLES:
        text = re.sub(ARTICLES[lang], " ", text)
    if lang in _CHAR_TOKENS:
        return [t for t in _segment(text, _CHAR_TOKENS[lang]) if t.strip()]
    return text.split()


def normalize(text: str, lang: str | None = None) -> str:
    return " ".join(normalize_tokens(text, lang))


def exact_match(prediction: str, reference: str, lang: str | None = None) -> float:
    _check_text("prediction", prediction)
    _check_text("reference", reference)
    return float(normalize(prediction, lang) == normalize(reference, lang))


def f1(prediction: str, reference: str, lang: str | None = None) -> float:
    _check_text("prediction", prediction)
    _check_text("reference", reference)
    pred, ref = normalize_tokens(prediction, lang), normalize_tokens(reference, lang)
    shared = sum((Counter(pred) & Counter(ref)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(pred), shared / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: Sequence[str], references: Sequence[Sequence[str]],
                 lang: str | None = None) -> dict[str, float]:
    """Exact match and F1 in percent, each question scored against its best reference.

    `references[i]` lists the acceptable answers of question i; `lang=None` is SQuAD v1.1's own
    (English) normalisation, a language code MLQA's (or its extension, see `rules`).
    """
    for name, seq in (("predictions", predictions), ("references", references)):
        if isinstance(seq, (str, bytes)) or not isinstance(seq, Sequence):
            raise TypeError(f"{name} must be a list (one entry per question), got {type(seq).__name__}")
    base_lang(lang)  # a bad code is named before any scoring
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} questions")
    if not predictions:
        return {"exact_match": float("nan"), "f1": float("nan")}
    em = f = 0.0
    for i, (pred, refs) in enumerate(zip(predictions, references)):
        if isinstance(refs, str) or not isinstance(refs, Sequence) or not refs:
            raise ValueError(f"question {i}: references must be a non-empty list of answers, got {refs!r}")
        if not isinstance(pred, str) or not all(isinstance(r, str) for r in refs):
            raise TypeError(f"question {i}: predictions and references must be strings, got {pred!r} / {refs!r}")
        em += max(exact_match(pred, r, lang) for r in refs)
        f += max(f1(pred, r, lang) for r in refs)
    n = len(predictions)
    return {"exact_match": 100.0 * em / n, "f1": 100.0 * f / n}
