"""Translation study params: one YAML file whose top-level key is `translation:` (params/cpu/translation.yaml).

    translation:
      name: translation                      # the study folder: outputs/<name>
      pairs: [en-de, en-fr, de-en]           # source-target; each direction is its own pair
      sources: [{kind: catalogs, domains: [gtk30, glib20]}]   # catalogs | manpages | files | hub
      tokenizer: outputs/etl                 # the pretraining ETL output (its tokenizer/)
      finetune: {params: params/cpu/translation_finetune.yaml, checkpoint: outputs/pretrain/model, seeds: [0, 1, 2]}
      eval: {num_beams: 4}

As in the QA study (mt5study.qa.config), either the base model is named (`tokenizer` and
`finetune.checkpoint`) or `pretrain` says how the study builds its own: never a silent fallback.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, field_validator, model_validator

from mt5study.config import Section
from mt5study.qa.config import PretrainConfig, check_base_model

# Languages a pair may name: ISO 639-1 code -> the English name used in the task prefix
# ("translate English to German: ..."), as T5 writes its WMT tasks.
LANGUAGES: dict[str, str] = {
    "ar": "Arabic", "bg": "Bulgarian", "ca": "Catalan", "cs": "Czech", "da": "Danish", "de": "German",
    "el": "Greek", "en": "English", "es": "Spanish", "et": "Estonian", "eu": "Basque", "fi": "Finnish",
    "fr": "French", "gl": "Galician", "he": "Hebrew", "hi": "Hindi", "hr": "Croatian", "hu": "Hungarian",
    "id": "Indonesian", "it": "Italian", "ja": "Japanese", "ko": "Korean", "lt": "Lithuanian",
    "lv": "Latvian", "nb": "Norwegian Bokmal", "nl": "Dutch", "pl": "Polish", "pt": "Portuguese",
    "ro": "Romanian", "ru": "Russian", "sk": "Slovak", "sl": "Slovenian", "sr": "Serbian", "sv": "Swedish",
    "th": "Thai", "tr": "Turkish", "uk": "Ukrainian", "vi": "Vietnamese", "zh": "Chinese",
}


class UnknownLanguageError(ValueError):
    """A pair or record names a language outside LANGUAGES."""


def parse_pair(pair: str) -> tuple[str, str]:
    """'en-de' -> ('en', 'de'), refusing unknown languages and a language paired with itself."""
    parts = pair.split("-")
    if len(parts) != 2 or not all(parts):
        raise UnknownLanguageError(f"pair {pair!r}: expected SOURCE-TARGET, e.g. en-de")
    unknown = [p for p in parts if p not in LANGUAGES]
    if unknown:
        raise UnknownLanguageError(f"pair {pair!r}: unknown language {unknown}; known: {sorted(LANGUAGES)}")
    if parts[0] == parts[1]:
        raise UnknownLanguageError(f"pair {pair!r}: source and target are the same language")
    return parts[0], parts[1]


def task_prefix(src: str, tgt: str) -> str:
    """The text before the source sentence, T5's form: 'translate English to German: '."""
    return f"translate {LANGUAGES[src]} to {LANGUAGES[tgt]}: "


class CatalogSource(Section):
    """gettext catalogs: <locale_dir>/<locale>/LC_MESSAGES/<domain>.mo, msgid (English) -> msgstr."""

    kind: Literal["catalogs"] = "catalogs"
    locale_dirs: list[str] = ["/usr/share/locale"]
    """System locale folders searched in order (scripts/install_catalogs.sh fills the first)."""
    domains: list[str] | None = None
    """Catalog names (gtk30, glib20, coreutils ...); None = every catalog found."""
    markup: Literal["strip", "drop", "keep"] = "strip"
    """Strings with XML/Pango markup (<b>, &amp;): tags removed on both sides, dropped, or kept."""
    max_messages_per_language: int | None = Field(default=None, gt=0)  # read order: domains sorted


class ManpageSource(Section):
    """Translated manual pages: one option's first description paragraph in two languages,
    aligned by command and option flag (pages rendered as mt5study.qa.manpages does)."""

    kind: Literal["manpages"] = "manpages"
    man_dir: str = "/usr/share/man"
    max_commands_per_language: int | None = Field(default=None, gt=0)  # pages rendered per language
    render_timeout_s: float = Field(default=30.0, gt=0.0)  # groff per page
    workers: int = Field(default=2, ge=1)  # groff processes at a time


class FileSource(Section):
    """Local pairs: TSV (source<TAB>target per line) or JSON lines ({"source": .., "target": ..})."""

    kind: Literal["files"] = "files"
    path: str
    """File or glob, relative to the repository root unless absolute."""
    src_lang: str
    tgt_lang: str
    format: Literal["tsv", "jsonl"] | None = None  # None: from the file's suffix


class HubSource(Section):
    """A standard set through `datasets`: a hub name (`dataset`) or local files of the same schema (`path`).

    layout=translation: records {"translation": {"de": ..., "en": ...}} (WMT, OPUS-100, opus_books);
    layout=flores: columns sentence_<code> (FLORES-200 pair configs, codes such as eng_Latn).
    """

    kind: Literal["hub"] = "hub"
    dataset: str | None = None  # e.g. wmt/wmt19, Helsinki-NLP/opus-100, facebook/flores
    config: str | None = None  # e.g. de-en, en-fr, eng_Latn-deu_Latn
    split: str = "validation"
    path: str | None = None  # local .json/.jsonl/.parquet/.csv files, relative to the repository root
    revision: str | None = None
    layout: Literal["translation", "flores"] = "translation"  # the record schema (see above)
    languages: dict[str, str] = {}
    """The set's language code -> ours, where they differ (eng_Latn: en); FLORES codes are known."""

    @model_validator(mode="after")
    def _one_origin(self) -> HubSource:
        if (self.dataset is None) == (self.path is None):
            raise ValueError("a hub source names exactly one of `dataset` (hub) or `path` (local files)")
        return self


SourceConfig = Annotated[Union[CatalogSource, ManpageSource, FileSource, HubSource], Field(discriminator="kind")]


class FilterConfig(Section):
    """What a pair of strings must satisfy to be kept (each drop counted in the manifest)."""

    min_chars: int = Field(default=2, ge=1)  # either side, after cleaning
    max_chars: int = Field(default=200, gt=1)  # either side, after cleaning
    max_token_ratio: float = Field(default=3.0, ge=1.0)
    """Longer side / shorter side in tokens of the study's tokenizer: misalignments are far off."""
    require_letters: bool = True  # drop strings with no letter ('%H:%M', '---')


class SplitConfig(Section):
    """Splits by the English string of a pair (the msgid), seeded: never one string in two splits."""

    validation_fraction: float = Field(default=0.05, gt=0.0, lt=0.5)
    test_fraction: float = Field(default=0.1, gt=0.0, lt=0.5)
    max_validation_per_pair: int | None = Field(default=None, gt=0)  # the trainer's eval loss reads these
    max_test_per_pair: int | None = Field(default=None, gt=0)  # strings translated and scored per pair
    max_train_per_pair: int | None = Field(default=None, gt=0)  # a seeded sample, before balancing


class SamplingConfig(Section):
    alpha: float = Field(default=0.3, ge=0.0)
    """Pair shares of the training set ∝ n_pair^alpha (the ETL's temperature sampling)."""
    max_train_examples: int | None = Field(default=None, gt=0)
    """Cap on the interleaved training set (small pairs are repeated until all are used once)."""


class FinetuneConfig(Section):
    params: str  # base training params (a TrainParams file, relative to the repository root)
    checkpoint: str | None = None  # the pretraining run's model/ folder or a hub name; None with pretrain
    overrides: dict[str, Any] = {}  # dotted overrides of the training params
    compare_random_init: bool = True  # also train from random initialisation, same params and budget
    concurrency: int = Field(default=1, gt=0)
    """Runs trained side by side, each one process with run.threads set in `overrides` (the
    studies' `study.concurrency`)."""
    seeds: list[int] = Field(default=[0], min_length=1)
    """run.seed of the runs of each start (data order, dropout, and the random init's weights)."""


class EvalConfig(Section):
    num_beams: int = Field(default=4, ge=2)  # beam search width (greedy is always decoded too)
    beam: bool = True  # also decode with beam search
    length_penalty: float = 1.0  # beam scores / length**length_penalty
    max_new_tokens: int = Field(default=64, gt=0)
    batch_size: int = Field(default=32, gt=0)  # source strings per generate call
    show_translations: int = Field(default=3, ge=0)  # per pair, in the notebook's sample table


class TranslationConfig(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    """Study name: its folder is outputs/<name> unless the notebook names one."""
    seed: int = 0  # splits and samples
    pairs: list[str] = Field(min_length=1)
    """source-target codes (en-de, de-en ...); each direction is a pair of its own."""
    sources: list[SourceConfig] = Field(min_length=1)
    filters: FilterConfig = FilterConfig()
    splits: SplitConfig = SplitConfig()
    sampling: SamplingConfig = SamplingConfig()
    tokenizer: str | None = None  # the pretraining ETL output folder (its tokenizer/) or a hub name
    input_length: int = Field(default=64, ge=8)  # encoder tokens: task prefix + source + </s>
    target_length: int = Field(default=48, ge=4)  # decoder tokens: target + </s>
    finetune: FinetuneConfig
    pretrain: PretrainConfig | None = None
    eval: EvalConfig = EvalConfig()

    @field_validator("pairs")
    @classmethod
    def _pairs(cls, pairs: list[str]) -> list[str]:
        for pair in pairs:
            parse_pair(pair)  # UnknownLanguageError is a ValueError: reported with the key
        if len(set(pairs)) != len(pairs):
            raise ValueError(f"pairs repeat: {pairs}")
        return pairs

    @model_validator(mode="after")
    def _check(self) -> TranslationConfig:
        check_base_model("translation", self.pretrain, self.tokenizer, self.finetune.checkpoint)
        if self.splits.validation_fraction + self.splits.test_fraction >= 0.8:
            raise ValueError("splits: validation_fraction + test_fraction leave under 20% for training")
        return self

    @property
    def qa(self) -> TranslationConfig:
        """The QA study's base-model helpers read `params.qa.{pretrain,tokenizer,finetune}`: the
        same fields here, so mt5study.qa.finetune.base_model builds or checks this study's base."""
        return self


class TranslationParams(Section):
    """A translation study (read by mt5study.config.load for files whose top key is `translation:`)."""

    translation: TranslationConfig
