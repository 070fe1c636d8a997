"""Typed params of the ETL: a params file with a top-level `etl:` key is read by `ETLParams`.

Sections follow the pipeline: source → cleaning → sampling → tokenizer → corruption → output.
Every field is validated before anything is read (see mt5study.config.load).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mt5study.config import Section


class ManpagesSource(Section):
    """Translated Linux manual pages installed by Debian's `manpages*` packages."""

    man_dir: str = "/usr/share/man"
    """Root of the manual pages: `man1..man8` hold English, `<locale>/manN` the translations."""
    packages_only: bool = True
    """Where dpkg exists, read only the pages that the `manpages`/`manpages-XX` packages install
    (reproducible across machines); without dpkg, or when False, every page under man_dir."""
    include_dev: bool = False
    """Also the `manpages-dev`/`manpages-XX-dev` packages (sections 2/3: C library interfaces)."""
    render_timeout_s: float = Field(default=30.0, gt=0.0)  # per page; groff rarely needs 0.1 s


class MC4Source(Section):
    """mC4 through Hugging Face `datasets`, streamed, one configuration per language."""

    dataset: str = "allenai/c4"
    """Hub name (or a local loading script/builder such as "json" together with data_files)."""
    config: str | None = "{lang}"
    """Configuration name per language; `{lang}` is replaced (allenai/c4: "de"; legacy mc4: "de")."""
    split: str = "train"
    data_files: str | None = None
    """Glob with `{lang}` for local files in mC4's schema, e.g. "/data/mc4/c4-{lang}.*.json.gz",
    read one by one so that errors name the file (datasets parses JSON in blocks: a bad record
    loses the rest of its file, counted as one bad record)."""
    revision: str | None = None  # hub commit or tag, recorded in the manifest
    text_field: str = "text"


class FilesSource(Section):
    """A local folder with one JSON-lines or text file (or sub-folder of files) per language."""

    path: str
    """Folder holding `<lang>.jsonl[.gz]`, `<lang>.txt[.gz]` or `<lang>/*.{jsonl,txt}[.gz]`."""
    text_field: str = "text"  # JSON-lines field holding the document
    txt_documents: Literal["line", "blank_line"] = "line"
    """In .txt files, one document per line, or documents separated by blank lines."""


class CatalogText(Section):
    """Language-specific corpora read alongside the main source: the installed gettext catalogs'
    text, one document per catalog and language (mt5study.data.catalog_text)."""

    locale_dirs: list[str] = ["/usr/share/locale"]
    """System locale folders searched in order (scripts/install_catalogs.sh fills the first)."""
    domains: list[str] | None = None
    """Catalog names (gtk30, coreutils ...); None = every catalog found."""
    markup: Literal["strip", "drop", "keep"] = "strip"  # as the translation study cleans messages
    exclude_heldout_of: str | None = None
    """A translation params file (params/cpu/translation.yaml): messages whose English string is in
    its validation or test split are left out in every language; None = nothing left out."""


class SourceConfig(Section):
    kind: Literal["manpages", "mc4", "files"] = "manpages"
    languages: list[str] | None = None
    """Language codes to read; None = all that the source has (mc4 needs a list)."""
    fraction: float = Field(default=1.0, gt=0.0, le=1.0)
    """Seeded share of each language's documents to read (keeps the sizes unequal, unlike a
    cap): manpages take round(fraction * pages), at least one; streams keep each document
    with this probability."""
    max_docs_per_language: int | None = Field(default=None, gt=0)
    """At most this many documents per language, after `fraction` (a seeded sample of pages
    for manpages, the first N of the stream otherwise); None = no cap."""
    on_bad_record: Literal["skip", "error"] = "skip"
    """Malformed JSON, non-UTF-8 lines, a truncated gzip: skip and count (with a warning naming
    file and line), or stop with that message."""
    manpages: ManpagesSource = ManpagesSource()
    mc4: MC4Source = MC4Source()
    files: FilesSource | None = None
    catalogs: CatalogText | None = None
    """Also the catalogs' text in every language the main source has (None: the main source only)."""

    @model_validator(mode="after")
    def _kind_needs_section(self) -> "SourceConfig":
        if self.kind == "files" and self.files is None:
            raise ValueError("source.kind=files needs a source.files section with a path")
        if self.kind == "mc4" and not self.languages:
            raise ValueError("source.kind=mc4 needs source.languages (mC4 has 101 configurations)")
        if self.languages is not None and len(set(self.languages)) != len(self.languages):
            raise ValueError(f"source.languages has duplicates: {self.languages}")
        return self


class CleaningConfig(Section):
    normalization: Literal["NFC", "NFKC", "none"] = "NFKC"  # Unicode normal form of every document
    remove_control_chars: bool = True  # C0/C1 controls except tab and newline
    min_chars: int = Field(default=200, ge=0)  # characters left after boilerplate removal
    boilerplate_min_docs: int = Field(default=10, gt=1)
    """A line is boilerplate if it appears in at least this many documents of the language ..."""
    boilerplate_min_fraction: float = Field(default=0.05, gt=0.0, le=1.0)
    """... and in at least this fraction of them (both counted on the sample below)."""
    boilerplate_sample_docs: int = Field(default=20000, gt=0)
    """Documents per language whose lines are counted (bounds memory at mC4 scale)."""
    deduplicate: bool = True  # drop exact duplicates of a document's cleaned text
    langid: bool = True  # drop documents whose py3langid language disagrees with the source's
    langid_chars: int = Field(default=5000, gt=0)  # characters of a document shown to py3langid
    langid_accept: dict[str, list[str]] = {}
    """Extra py3langid codes accepted for a language, e.g. {"nb": ["no", "nn", "da"]}."""
    on_empty_language: Literal["error", "drop"] = "error"
    """A language with no documents left: stop, or drop it with a warning."""


class SamplingConfig(Section):
    alpha: float = Field(default=0.3, ge=0.0, le=1.0)
    """Temperature exponent: p_l ∝ min(n_l, cap)^alpha (mT5: 0.3; 1 = natural, 0 = uniform)."""
    cap: float | None = Field(default=None, gt=0.0)  # size above which a language counts as cap
    size_unit: Literal["documents", "characters"] = "documents"
    """What n_l counts after cleaning (seqio's rate_num_examples counts documents)."""
    stopping_strategy: Literal["first_exhausted", "all_exhausted"] = "all_exhausted"
    """datasets.interleave_datasets: stop at the first language that runs out, or when all have
    run out at least once (small languages repeat, as in mT5's epochs over them)."""


class TokenizerConfig(Section):
    pretrained: str | None = None
    """A released tokenizer (local folder or hub name, e.g. google/mt5-xxl); None = train one."""
    vocab_size: int = Field(default=8000, gt=300)
    """Total vocabulary, len(tokenizer): SentencePiece pieces (pad, eos, unk, 256 bytes, learned)
    plus extra_ids sentinels."""
    extra_ids: int = Field(default=100, ge=1)  # sentinels <extra_id_0> ... (T5: 100)
    sample_chars: int = Field(default=3_000_000, gt=0)
    """Characters of training text, drawn per language in proportion to the sampling probabilities."""
    character_coverage: float = Field(default=0.9995, gt=0.0, le=1.0)
    """Share of characters covered by pieces; the rest fall back to UTF-8 bytes."""
    normalization_rule: Literal["nmt_nfkc", "nfkc", "identity"] = "nmt_nfkc"  # T5's default
    max_sentence_chars: int = Field(default=4000, gt=0)  # longer training lines are cut


class CorruptionConfig(Section):
    inputs_length: int = Field(default=64, gt=4)  # encoder tokens per example, EOS included
    noise_density: float = Field(default=0.15, gt=0.0, lt=1.0)  # T5/mT5: 0.15
    mean_noise_span_length: float = Field(default=3.0, ge=1.0)  # T5/mT5: 3
    chunks_per_unit: int = Field(default=2048, gt=0)
    """Examples per unit of work (one deterministic RNG stream each, independent of num_proc)."""


class OutputConfig(Section):
    validation_fraction: float = Field(default=0.05, ge=0.0, lt=1.0)
    """Documents per language held out (at least one where a language has two or more)."""
    max_train_examples: int | None = Field(default=None, gt=0)  # prefix of the interleaved stream
    max_validation_examples: int | None = Field(default=None, gt=0)
    max_shard_size: str = "500MB"  # datasets.save_to_disk shard size
    keep_documents: bool = True
    """Write documents.parquet (language, split, characters and tokens of each document)."""


class SlurmEngine(Section):
    """Where the stages run as Slurm job arrays (datatrove's SlurmPipelineExecutor)."""

    partition: str = "debug"
    time: str = "00:30:00"  # per array task, HH:MM:SS
    cpus_per_task: int = Field(default=1, gt=0)
    mem_per_cpu_gb: int = Field(default=2, gt=0)  # GiB per CPU
    venv: str | None = None
    """Python venv whose bin/activate each job sources; None = the venv running the submit."""
    wait: bool = True  # block until the merge stage has written the manifest
    poll_s: float = Field(default=2.0, gt=0.0)  # seconds between checks while waiting


class NearDedupConfig(Section):
    """MinHash near-duplicate removal after the exact dedup (datatrove's MinHash stages,
    mt5study.data.near_dedup): two documents whose word n-gram signatures agree in every hash
    of at least one bucket are one cluster, and all but one of each cluster are dropped.
    P(match) for Jaccard similarity s is 1 - (1 - s^hashes_per_bucket)^buckets."""

    enabled: bool = False
    n_grams: int = Field(default=5, gt=0)  # words per shingle
    buckets: int = Field(default=14, gt=0)  # LSH bands, one task each in the bucket stage
    hashes_per_bucket: int = Field(default=8, gt=0)  # MinHash values per band
    seed: int = 1  # of the hash functions (the same on every task)


class EngineConfig(Section):
    """How the ETL runs: `inline` (one process tree, the original single-node path, writing a
    `datasets` DatasetDict), or sharded stages on datatrove executors, `local` (this machine) or
    `slurm` (chained job arrays), writing Arrow example shards that the trainer streams; there
    output.max_*_examples and keep_documents do not apply (mt5study.data.engine)."""

    executor: Literal["inline", "local", "slurm"] = "inline"
    tasks: int = Field(default=4, gt=0)
    """Tasks of the clean and encode stages; task t takes shards t, t + tasks, ... (the output
    does not depend on this number)."""
    workers: int = Field(default=2, gt=0)  # local: tasks running at once (processes)
    files_per_shard: int = Field(default=1, gt=0)
    """Input files per shard (a manual page is one file; an mC4 json.gz one file of ~350k docs)."""
    dedup_buckets: int = Field(default=4, gt=0)
    """Exact deduplication: document hashes partitioned into this many buckets, one task each
    (memory per task ~16 bytes per document / buckets)."""
    mix_block: int = Field(default=4096, gt=0)
    """Stream positions per interleaving block: every block holds round(p_l * mix_block)
    examples of language l in a seeded order (shares exact to 1/mix_block)."""
    start_delay_s: int = Field(default=0, ge=0)
    """Each task first sleeps a random 0..start_delay_s seconds (datatrove's
    randomize_start_duration: spreads the first reads of many tasks on shared storage)."""
    near_dedup: NearDedupConfig = NearDedupConfig()
    slurm: SlurmEngine = SlurmEngine()

    @model_validator(mode="after")
    def _near_dedup_needs_stages(self) -> "EngineConfig":
        if self.near_dedup.enabled and self.executor == "inline":
            raise ValueError("near_dedup.enabled=True needs executor local or slurm (the inline ETL has no "
                             "MinHash stages)")
        return self


class ETLConfig(Section):
    seed: int = 0
    num_proc: int = Field(default=2, gt=0)  # worker processes (languages, tokenisation, corruption)
    source: SourceConfig = SourceConfig()
    cleaning: CleaningConfig = CleaningConfig()
    sampling: SamplingConfig = SamplingConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    corruption: CorruptionConfig = CorruptionConfig()
    output: OutputConfig = OutputConfig()
    engine: EngineConfig = EngineConfig()

    @model_validator(mode="after")
    def _cross(self) -> "ETLConfig":
        if self.tokenizer.pretrained is None and self.tokenizer.vocab_size - self.tokenizer.extra_ids < 300:
            raise ValueError(
                f"tokenizer.vocab_size={self.tokenizer.vocab_size} leaves fewer than 300 SentencePiece "
                f"pieces after {self.tokenizer.extra_ids} sentinels (259 are pad/eos/unk and 256 bytes)"
            )
        return self


class ETLParams(Section):
    """An ETL run: `mt5study etl --params FILE --out DIR`."""

    etl: ETLConfig
