"""The tokenizer: a SentencePiece unigram model saved as a Hugging Face T5 tokenizer, or a
released one (e.g. google/mt5-xxl) from a local folder or the hub.

Layout as in T5/mT5: pad=0, eos=1, unk=2, then 256 byte pieces (byte fallback: no character
is ever <unk>), learned pieces, and `extra_ids` sentinels at the top of the vocabulary with
<extra_id_0> the highest id. Text is encoded with the SentencePiece model itself, which never
reads `</s>`, `<pad>` or `<extra_id_5>` in text as special ids (see `Encoder`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from mt5study.data.config import ETLConfig
from mt5study.data.output import ETLError
from mt5study.data.sources import stable_seed

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2  # T5/mT5's special ids


def train_sentencepiece(
    text_file: Path,
    model_prefix: Path,
    pieces: int,
    character_coverage: float = 0.9995,
    normalization_rule: str = "nmt_nfkc",
    num_threads: int = 1,
    seed: int = 0,
    max_sentence_chars: int = 4000,
) -> Path:
    """Train a unigram model with byte fallback; returns the .model path."""
    import sentencepiece as spm

    spm.set_random_generator_seed(seed)
    spm.SentencePieceTrainer.train(
        input=str(text_file),
        model_prefix=str(model_prefix),
        model_type="unigram",
        vocab_size=pieces,
        hard_vocab_limit=False,  # a small sample may not support every piece asked for
        character_coverage=character_coverage,
        byte_fallback=True,
        pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
        pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
        normalization_rule_name=normalization_rule,
        max_sentence_length=4 * max_sentence_chars + 16,  # bytes: UTF-8 takes up to 4 per char
        shuffle_input_sentence=True,
        num_threads=num_threads,
        minloglevel=2,  # warnings and errors only
    )
    model = Path(f"{model_prefix}.model")
    _strip_paths(model)
    return model


def _strip_paths(model: Path) -> None:
    """SentencePiece stores the training file and output paths in the model; keep only the
    file names, so that the same training gives the same bytes in any folder."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.ParseFromString(model.read_bytes())
    inputs = [Path(p).name for p in proto.trainer_spec.input]
    del proto.trainer_spec.input[:]
    proto.trainer_spec.input.extend(inputs)
    proto.trainer_spec.model_prefix = Path(proto.trainer_spec.model_prefix).name
    model.write_bytes(proto.SerializeToString())


def save_t5_tokenizer(spm_model: Path, out_dir: Path, extra_ids: int = 100) -> Any:
    """Save `spm_model` as a T5 tokenizer (slow and fast files) with `extra_ids` sentinels."""
    from transformers import T5TokenizerFast
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "You set add_prefix_space ..." is what we mean
    with warnings.catch_warnings():  # "byte fallback not implemented": switched on below
        warnings.simplefilter("ignore", UserWarning)
        # add_prefix_space: SentencePiece's dummy "▁" before the text (else the converter drops it)
        # transformers 5 ignores `vocab_file=` in the constructor (the tokenizer comes out with
        # only its special tokens); loading a folder that holds spiece.model converts it.
        out_dir.mkdir(parents=True, exist_ok=True)
        if spm_model.resolve() != (out_dir / "spiece.model").resolve():
            shutil.copyfile(spm_model, out_dir / "spiece.model")
        fast = T5TokenizerFast.from_pretrained(
            str(out_dir), extra_ids=extra_ids, legacy=True, from_slow=True, add_prefix_space=True
        )
    hf_logging.set_verbosity(verbosity)
    fast.save_pretrained(str(out_dir))
    _enable_byte_fallback(out_dir / "tokenizer.json")
    # Without add_prefix_space in its config, loading reads tokenizer.json instead of converting
    # spiece.model again (which would lose the byte fallback).
    config_file = out_dir / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config.pop("add_prefix_space", None)
    config.pop("from_slow", None)  # transformers 5 would convert spiece.model again on load
    # transformers 5's T5Tokenizer rebuilds its Unigram model from the vocabulary alone (byte
    # fallback off, its own pre-tokenizer); the generic fast class runs tokenizer.json as saved.
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return T5TokenizerFast.from_pretrained(str(out_dir))


_NEVER = -1e9  # unigram score of pieces that must never be matched from text


def _enable_byte_fallback(path: Path) -> None:
    """Make the fast tokenizer encode as SentencePiece does.

    transformers' T5 converter drops byte fallback (rare characters become <unk>) and keeps
    <pad>, </s>, <unk>, the byte pieces <0xNN> and the sentinels as ordinary unigram pieces,
    which text such as "</s>" then matches. Here byte fallback is switched on, those pieces get
    a score that no segmentation picks (SentencePiece never matches control or byte pieces in
    text), and the decoder turns byte pieces back into characters. One difference remains:
    the fast tokenizer still matches such a string when its characters (`<`, `/`, `>`) are not
    pieces at all, since its <unk> score is tied to the lowest piece score; ASCII punctuation
    is always a piece in practice, and the ETL encodes with SentencePiece itself.
    """
    state = json.loads(path.read_text(encoding="utf-8"))
    model = state["model"]
    model["byte_fallback"] = True
    for piece in model["vocab"]:
        if _RESERVED.fullmatch(piece[0]):
            piece[1] = _NEVER
    decoder = state.get("decoder")
    steps = [{"type": "ByteFallback"}] + ([decoder] if decoder else [])  # bytes first, then "▁" -> " "
    state["decoder"] = {"type": "Sequence", "decoders": steps}
    path.write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")


_RESERVED = re.compile(r"<pad>|</s>|<unk>|<0x[0-9A-F]{2}>|<extra_id_\d+>")


def load_tokenizer(name_or_path: str | Path) -> Any:
    """A saved or released tokenizer (transformers.AutoTokenizer)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(name_or_path))


def sentinel_ids(tokenizer: Any, count: int | None = None) -> list[int]:
    """Ids of <extra_id_0>, <extra_id_1>, ... in use order."""
    n = count if count is not None else sum(1 for t in tokenizer.get_vocab() if t.startswith("<extra_id_"))
    ids = tokenizer.convert_tokens_to_ids([f"<extra_id_{i}>" for i in range(n)])
    if any(i is None or i == tokenizer.unk_token_id for i in ids):
        raise ValueError(f"tokenizer has fewer than {n} sentinels <extra_id_i>")
    return list(ids)


def vocab_and_sentinels(folder: str | Path) -> tuple[int, list[int]]:
    """len(tokenizer) and the sentinel ids of a saved tokenizer, read with the `tokenizers`
    library from tokenizer.json where there is one (no transformers import in ETL tasks)."""
    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        tok = load_tokenizer(folder)
        return len(tok), sentinel_ids(tok)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    ids = []
    while (i := tok.token_to_id(f"<extra_id_{len(ids)}>")) is not None:
        ids.append(i)
    if not ids:
        raise ValueError(f"{path}: no sentinels <extra_id_i>")
    return tok.get_vocab_size(with_added_tokens=True), ids


def check_t5_layout(tokenizer: Any) -> None:
    """Refuse a tokenizer whose pad/eos/unk ids are not T5's 0/1/2."""
    got = (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id)
    if got != (PAD_ID, EOS_ID, UNK_ID):
        raise ValueError(f"tokenizer pad/eos/unk ids are {got}, expected T5's {(PAD_ID, EOS_ID, UNK_ID)}")


@dataclass(frozen=True)
class Encoder:
    """Text -> ids without special tokens, picklable for worker processes.

    With a SentencePiece model (`spiece.model` in the tokenizer folder) the model encodes
    directly; otherwise the HF tokenizer with split_special_tokens=True, so that `</s>` or
    `<extra_id_5>` written in a document stay ordinary text either way.
    """

    path: str  # tokenizer folder

    @property
    def spm_file(self) -> str | None:
        f = os.path.join(self.path, "spiece.model")
        return f if os.path.isfile(f) else None

    def _backend(self) -> Any:
        key = (self.path, os.getpid())
        if key not in _BACKENDS:
            if self.spm_file:
                import sentencepiece as spm

                _BACKENDS[key] = spm.SentencePieceProcessor(model_file=self.spm_file)
            else:
                _BACKENDS[key] = load_tokenizer(self.path)
        return _BACKENDS[key]

    def encode(self, texts: list[str]) -> list[list[int]]:
        backend = self._backend()
        if self.spm_file:
            return backend.encode(texts, out_type=int)
        # transformers resets split_special_tokens on every call: it must be passed each time.
        return backend(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]

    def decode(self, ids: Iterable[int]) -> str:
        backend = self._backend()
        ids = [int(i) for i in ids]
        return backend.decode(ids) if self.spm_file else backend.decode(ids, skip_special_tokens=False)


_BACKENDS: dict[tuple[str, int], Any] = {}


def tokenizer_hash(folder: Path) -> str:
    """sha256 over the names and bytes of the tokenizer's files."""
    h = hashlib.sha256()
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode() + b"\x00" + p.read_bytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- in the ETL


def make_tokenizer(cfg: ETLConfig, docs, doc_range, probs: dict[str, float], out_dir: Path, work: Path) -> dict[str, Any]:
    """Train SentencePiece on a temperature-balanced sample of training documents, or copy a
    released tokenizer; either way saved as a HF tokenizer in out_dir."""
    tc = cfg.tokenizer
    if tc.pretrained is not None:
        tok = load_tokenizer(tc.pretrained)
        tok.save_pretrained(str(out_dir))
        return {"kind": "pretrained", "name": tc.pretrained}
    sample_file = work / "tokenizer_sample.txt"
    chars = write_tokenizer_sample(docs, doc_range, probs, tc.sample_chars, tc.max_sentence_chars, cfg.seed, sample_file)
    return train_on_sample(cfg, sample_file, chars, out_dir, work)


def train_on_sample(cfg: ETLConfig, sample_file: Path, chars: dict[str, int], out_dir: Path, work: Path) -> dict[str, Any]:
    """Train SentencePiece on a written sample (one line per sentence) and save the T5 tokenizer."""
    tc = cfg.tokenizer
    try:
        model = train_sentencepiece(
            sample_file, work / "spiece", tc.vocab_size - tc.extra_ids, tc.character_coverage,
            tc.normalization_rule, num_threads=cfg.num_proc, seed=cfg.seed, max_sentence_chars=tc.max_sentence_chars,
        )
    except RuntimeError as e:  # SentencePiece reports problems as RuntimeError("INTERNAL: ...")
        raise ETLError(
            f"tokenizer training failed: {e}\n(raise tokenizer.vocab_size or tokenizer.sample_chars, or lower "
            f"tokenizer.character_coverage: many distinct characters, as in Chinese or Japanese, need many pieces)"
        ) from e
    tok = save_t5_tokenizer(model, out_dir, tc.extra_ids)
    if len(tok) < tc.vocab_size:
        warnings.warn(f"tokenizer: the sample supports {len(tok)} of the {tc.vocab_size} tokens asked for",
                      stacklevel=2)
    return {"kind": "trained", "model_type": "unigram", "byte_fallback": True, "sample_chars": chars}


def write_tokenizer_sample(docs, doc_range, probs: dict[str, float], total_chars: int, max_line: int, seed: int,
                           path: Path) -> dict[str, int]:
    """Lines of training documents, p_l * total_chars characters per language (all of a
    language's text where it has less), documents in seeded random order; chars per language."""
    taken: dict[str, int] = {}
    with open(path, "w", encoding="utf-8") as f:
        for lang, p in sorted(probs.items()):
            a, b = doc_range[(lang, "train")]
            order = a + np.random.default_rng([seed, stable_seed(lang), 2]).permutation(b - a)
            budget, used = p * total_chars, 0
            for start in range(0, len(order), 256):
                if used >= budget:
                    break
                for text in docs.select(order[start:start + 256])["text"]:
                    for line in text.split("\n"):
                        line = line.strip()[:max_line]
                        if line and used < budget:
                            f.write(line + "\n")
                            used += len(line)
            taken[lang] = used
    return taken
