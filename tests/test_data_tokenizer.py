"""The trained tokenizer: T5 layout, sentinels, byte fallback, special-token strings in text."""

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from mt5study.data.samples import SENTENCES, make_documents
from mt5study.data.tokenizer import (
    Encoder, check_t5_layout, save_t5_tokenizer, sentinel_ids, tokenizer_hash, train_sentencepiece,
)


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    work = tmp_path_factory.mktemp("tok")
    with open(work / "sample.txt", "w", encoding="utf-8") as f:
        for lang in SENTENCES:
            for doc in make_documents(lang, 60, seed=1):
                f.write(doc.replace("\n\n", "\n") + "\n")
        # ASCII markup characters, as any real corpus has them (the fast tokenizer needs them as
        # pieces to match SentencePiece on "</s>"-like text; see tokenizer._enable_byte_fallback).
        f.write("Markup such as <b>bold</b>, a/b and snake_case_names: 0123456789.\n" * 300)
    model = train_sentencepiece(work / "sample.txt", work / "sp", pieces=500, num_threads=1)
    save_t5_tokenizer(model, work / "tokenizer", extra_ids=100)
    return work / "tokenizer"


def test_t5_layout_and_sentinels(tok_dir):
    tok = AutoTokenizer.from_pretrained(tok_dir)
    assert isinstance(tok, PreTrainedTokenizerFast)  # transformers 5: tokenizer.json as saved (byte fallback)
    check_t5_layout(tok)
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert len(tok) == 600  # 500 pieces + 100 sentinels
    ids = sentinel_ids(tok)
    assert len(ids) == 100 and ids[0] == 599 and ids == list(range(599, 499, -1))
    assert tok.convert_ids_to_tokens(ids[:2]) == ["<extra_id_0>", "<extra_id_1>"]
    assert tok.convert_tokens_to_ids("<0x41>") == 3 + 0x41  # byte pieces follow pad, eos, unk


TEXTS = [
    "Plain English text about the weather.",
    "Ünïcödé, emoji 😀 and rare characters ꙮ Ω ∮ 龘 𝄞 that the sample never saw.",
    "Literal markup: </s> <pad> <unk> <extra_id_5> <0x41> inside a document.",
]


@pytest.mark.parametrize("text", TEXTS)
def test_encoder_round_trip_and_fast_tokenizer_agree(tok_dir, text):
    enc = Encoder(str(tok_dir))
    ids = enc.encode([text])[0]
    assert 2 not in ids  # byte fallback: nothing is <unk>
    assert enc.decode(ids) == text
    fast = AutoTokenizer.from_pretrained(tok_dir)
    assert fast(text, add_special_tokens=False, split_special_tokens=True)["input_ids"] == ids
    assert fast.decode(ids) == text


def test_special_token_strings_stay_text(tok_dir):
    enc = Encoder(str(tok_dir))
    tok = AutoTokenizer.from_pretrained(tok_dir)
    special = {0, 1, 2, *sentinel_ids(tok)}
    with_markup = enc.encode(["before </s> <pad> <extra_id_5> after"])[0]
    assert not special & set(with_markup)
    # The markup does not shift the text around it: the words encode as they do alone.
    before, after = enc.encode(["before", " after"])
    assert with_markup[: len(before)] == before and with_markup[-len(after):] == after


def test_hash_changes_with_content(tok_dir, tmp_path):
    h = tokenizer_hash(tok_dir)
    assert h == tokenizer_hash(tok_dir) and len(h) == 64
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in tok_dir.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    assert tokenizer_hash(copy) == h
    (copy / "tokenizer_config.json").write_text("{}")
    assert tokenizer_hash(copy) != h
