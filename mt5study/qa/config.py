"""QA fine-tuning params: one YAML file whose top-level key is `qa:` (see params/cpu/qa.yaml).

    qa:
      name: qa                              # the study folder: outputs/<name>
      source: {kind: manpages, languages: [en, de, ja]}   # or hub / files (SQuAD-format sets)
      tokenizer: outputs/etl                # the pretraining ETL output (its tokenizer/)
      input_length: 256                     # encoder tokens: "question: ... context: ..." + </s>
      target_length: 32                     # decoder tokens: the answer + </s>
      window: {stride: 128}
      finetune: {params: params/cpu/qa_finetune.yaml, checkpoint: outputs/pretrain/model}
      eval: {max_new_tokens: 32, batch_size: 32}

Where no pretraining run exists (tests, CI, the smoke notebook), `qa.pretrain` names an ETL
params file and a training params file: the study then builds its own tokenizer and base model
inside its folder first, and `qa.tokenizer` / `qa.finetune.checkpoint` must be left out. Either
the base model is named, or the file says how it is made: never a silent fallback.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from mt5study.config import Section

# Question templates of the embedded man-page set, per language: {opt} is the option as the page
# writes it first (e.g. "-v"), {cmd} the command (the page's file name).
QUESTION_TEMPLATES: dict[str, str] = {
    "en": "What does the option {opt} of {cmd} do?",
    "de": "Was bewirkt die Option {opt} von {cmd}?",
    "fr": "Que fait l'option {opt} de {cmd} ?",
    "es": "¿Qué hace la opción {opt} de {cmd}?",
    "it": "Che cosa fa l'opzione {opt} di {cmd}?",
    "pt": "O que faz a opção {opt} de {cmd}?",
    "nl": "Wat doet de optie {opt} van {cmd}?",
    "sv": "Vad gör flaggan {opt} för {cmd}?",
    "da": "Hvad gør tilvalget {opt} til {cmd}?",
    "nb": "Hva gjør valget {opt} for {cmd}?",
    "pl": "Co robi opcja {opt} polecenia {cmd}?",
    "cs": "Co dělá přepínač {opt} příkazu {cmd}?",
    "ro": "Ce face opțiunea {opt} a comenzii {cmd}?",
    "ru": "Что делает параметр {opt} команды {cmd}?",
    "uk": "Що робить параметр {opt} команди {cmd}?",
    "tr": "{cmd} komutunun {opt} seçeneği ne yapar?",
    "vi": "Tùy chọn {opt} của {cmd} có tác dụng gì?",
    "id": "Apa fungsi opsi {opt} pada {cmd}?",
    "ja": "{cmd} のオプション {opt} は何をしますか？",
    "zh": "{cmd} 的选项 {opt} 有什么作用？",
    "ko": "{cmd}의 {opt} 옵션은 무엇을 합니까?",
}


# Templates of the `which_option` task: {desc} is the option's description (its first paragraph,
# or first sentence when long), {cmd} the command; the answer is the option's tag ("-a, --all").
WHICH_OPTION_TEMPLATES: dict[str, str] = {
    "en": "Which option of {cmd}: {desc}",
    "de": "Welche Option von {cmd}: {desc}",
    "fr": "Quelle option de {cmd} : {desc}",
    "es": "¿Qué opción de {cmd}?: {desc}",
    "it": "Quale opzione di {cmd}: {desc}",
    "pt": "Qual opção de {cmd}: {desc}",
    "nl": "Welke optie van {cmd}: {desc}",
    "sv": "Vilken flagga för {cmd}: {desc}",
    "da": "Hvilket tilvalg til {cmd}: {desc}",
    "nb": "Hvilket valg for {cmd}: {desc}",
    "pl": "Która opcja polecenia {cmd}: {desc}",
    "cs": "Který přepínač příkazu {cmd}: {desc}",
    "ro": "Ce opțiune a comenzii {cmd}: {desc}",
    "ru": "Какой параметр команды {cmd}: {desc}",
    "uk": "Який параметр команди {cmd}: {desc}",
    "tr": "{cmd} komutunun hangi seçeneği: {desc}",
    "vi": "Tùy chọn nào của {cmd}: {desc}",
    "id": "Opsi mana pada {cmd}: {desc}",
    "ja": "{cmd} のどのオプション：{desc}",
    "zh": "{cmd} 的哪个选项：{desc}",
    "ko": "{cmd}의 어떤 옵션: {desc}",
}


class ManpagesQA(Section):
    """The embedded QA set: one question per documented option of a section-1 manual page."""

    task: Literal["describe_option", "which_option"] = "describe_option"
    """describe_option: "What does the option -v of ls do?" -> its description (up to
    max_answer_chars); which_option: "Which option of ls: <description>" -> the option's tag as
    the page prints it ("-v, --verbose"), a short answer of a few words as in SQuAD and MLQA."""

    man_dir: str = "/usr/share/man"
    """Root of the pages: man1/ holds English, <locale>/man1/ the translations."""
    max_commands_per_language: int | None = Field(default=None, gt=0)
    """Commands (pages) per language at most, in a seeded order shared by all languages; with a
    limit, round(limit x validation_fraction) of them (at least one) are held out."""
    max_questions_per_command: int | None = Field(default=None, gt=0)
    """Options asked about per page at most (a seeded sample); ls alone documents ~60."""
    context_chars: int = Field(default=700, ge=100)
    """A context is a run of consecutive option entries of at most this many characters."""
    max_answer_chars: int = Field(default=160, ge=10)
    """Longer descriptions are cut to their first sentence; still longer ones are skipped (the
    answer of describe_option, the description quoted in the question of which_option)."""
    min_answer_chars: int = Field(default=3, ge=1)  # shorter descriptions ("=") are skipped
    render_timeout_s: float = Field(default=30.0, gt=0.0)  # groff per page
    workers: int = Field(default=2, ge=1)  # groff processes rendering pages at a time


class QASet(Section):
    """One SQuAD-format set: a hub dataset (`dataset`) or local JSON / JSON-lines (`path`).

    `{lang}` in `config` or `path` is replaced by each of `source.languages`.
    """

    dataset: str | None = None
    """Hub name for datasets.load_dataset, e.g. google-research-datasets/tydiqa, google/xquad."""
    config: str | None = None  # e.g. secondary_task (TyDi GoldP), xquad.{lang}, mlqa.{lang}.{lang}
    split: str = "train"
    path: str | None = None
    """Local file or glob (relative to the repository root): SQuAD nested .json, flat .json/.jsonl."""
    lang: str | None = None
    """Language of every example; None: `{lang}`, the record's `lang`, or the TyDi id prefix."""
    revision: str | None = None  # hub commit or tag

    @model_validator(mode="after")
    def _one_origin(self) -> QASet:
        if (self.dataset is None) == (self.path is None):
            raise ValueError("a QA set names exactly one of `dataset` (hub) or `path` (local files)")
        return self


class QASource(Section):
    kind: Literal["manpages", "hub", "files"] = "manpages"
    languages: list[str] | None = None
    """Languages kept (manpages: built); None = every language found (with a template)."""
    manpages: ManpagesQA = ManpagesQA()
    train: list[QASet] = []
    """hub/files: the training sets (SQuAD English for zero-shot transfer, TyDi GoldP train ...)."""
    validation: list[QASet] = []
    """hub/files: the evaluation sets (XQuAD, MLQA, TyDi GoldP validation ...)."""
    validation_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    """manpages: share of commands held out, the same commands in every language."""
    max_train_per_language: int | None = Field(default=None, gt=0)  # examples, a seeded sample
    max_validation_per_language: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _sets(self) -> QASource:
        if self.kind == "manpages":
            if self.train or self.validation:
                raise ValueError("source.kind=manpages builds its own splits: leave train/validation empty")
            unknown = sorted(set(self.languages or []) - set(QUESTION_TEMPLATES))
            if unknown:
                raise ValueError(f"no question template for languages {unknown}; templates: {sorted(QUESTION_TEMPLATES)}")
        else:
            if not self.train or not self.validation:
                raise ValueError(f"source.kind={self.kind} needs `train` and `validation` sets")
            want = "dataset" if self.kind == "hub" else "path"
            for s in self.train + self.validation:
                if getattr(s, want) is None:
                    raise ValueError(f"source.kind={self.kind}: every set needs `{want}`")
        return self


class WindowConfig(Section):
    """Contexts longer than the encoder input are cut into overlapping windows of tokens."""

    stride: int = Field(default=128, gt=0)
    """Context tokens between the starts of consecutive windows (HF's doc_stride is the overlap)."""
    max_windows: int = Field(default=16, gt=0)  # per question at evaluation; more are counted, not read
    min_context_tokens: int = Field(default=16, gt=0)  # questions leaving less room are dropped


class FinetuneConfig(Section):
    params: str
    """Base training params (a TrainParams file, relative to the repository root)."""
    checkpoint: str | None = None
    """Pretrained weights: a run's model/ folder or a hub name; None only with qa.pretrain."""
    overrides: dict[str, Any] = {}
    """Dotted overrides of the training params (run.steps, optim.lr ...)."""
    compare_random_init: bool = True
    """Also fine-tune from random initialisation on the same budget (does pretraining help?)."""
    concurrency: int = Field(default=1, gt=0)
    """Runs trained side by side, each one process with run.threads set in `overrides` (the
    studies' `study.concurrency`)."""
    seeds: list[int] = Field(default=[0], min_length=1)
    """run.seed of the fine-tuning runs, one run per start and seed (data order, dropout, and the
    random initialisation): >= 2 give each score a spread; with one, no spread can be given."""

    @model_validator(mode="after")
    def _distinct_seeds(self) -> FinetuneConfig:
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"finetune.seeds {self.seeds}: a seed is repeated")
        return self


class PretrainConfig(Section):
    """Build the base model in the study folder first: <out>/pretrain/{etl,run}."""

    etl_params: str  # ETL params file: its output's tokenizer/ becomes qa.tokenizer
    train_params: str  # training params file; data.path is set to the ETL output
    overrides: dict[str, Any] = {}  # dotted overrides of train_params


class EvalConfig(Section):
    max_new_tokens: int = Field(default=32, gt=0)  # greedy decoding, tokens per answer
    batch_size: int = Field(default=32, gt=0)  # windows per generate call
    max_questions_per_language: int | None = Field(default=None, gt=0)  # None: every validation question
    show_predictions: int = Field(default=3, ge=0)  # per language, in the notebook's sample table


def check_base_model(section: str, pretrain: Any, tokenizer: str | None, checkpoint: str | None) -> None:
    """A fine-tuning study's base model (QA, translation): either `<section>.pretrain` builds the
    tokenizer and checkpoint, or `<section>.tokenizer` and `<section>.finetune.checkpoint` name a
    pretraining run; anything else is a ValueError naming the keys."""
    if pretrain is not None:
        if tokenizer is not None or checkpoint is not None:
            raise ValueError(f"{section}.pretrain builds the tokenizer and checkpoint: leave {section}.tokenizer and "
                             f"{section}.finetune.checkpoint unset")
    elif tokenizer is None or checkpoint is None:
        raise ValueError(f"name {section}.tokenizer and {section}.finetune.checkpoint (a pretraining run), "
                         f"or set {section}.pretrain")


class QAConfig(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    """Study name: its folder is outputs/<name> unless the notebook names one."""
    seed: int = 0
    source: QASource = QASource()
    tokenizer: str | None = None
    """The pretraining ETL output folder (its tokenizer/), a tokenizer folder, or a hub name."""
    input_length: int = Field(default=256, ge=32)  # encoder tokens per example
    target_length: int = Field(default=32, ge=4)  # decoder tokens per example (answer + </s>)
    window: WindowConfig = WindowConfig()
    finetune: FinetuneConfig
    pretrain: PretrainConfig | None = None
    eval: EvalConfig = EvalConfig()

    @model_validator(mode="after")
    def _base_model(self) -> QAConfig:
        check_base_model("qa", self.pretrain, self.tokenizer, self.finetune.checkpoint)
        if self.window.min_context_tokens >= self.input_length:
            raise ValueError(f"window.min_context_tokens={self.window.min_context_tokens} must be below "
                             f"input_length={self.input_length}")
        return self


class QAParams(Section):
    """A QA fine-tuning study (read by mt5study.config.load for files whose top key is `qa:`)."""

    qa: QAConfig
