"""Corrupt input data read by the ETL's files source: malformed JSON lines, non-UTF-8 bytes,
records without the text field, a truncated gzip, an empty language, a single 100 MB line and
special-token strings inside text. Each bad record is counted and named (file and line); the
good records around it are all kept (a malformed line does not lose the rest of its file);
memory stays bounded.
"""

from __future__ import annotations

import gzip
import json
import tracemalloc

from mt5study.data import sampling, sources
from mt5study.data.config import FilesSource

SPECIAL = "keep <pad> </s> <unk> <extra_id_0> and ▁ verbatim"


def _write_corpus(root):
    root.mkdir()
    good = [json.dumps({"text": f"english document {i}"}) for i in range(6)]
    lines = [good[0], '{"text": "cut', good[1], "[1, 2]", good[2], '{"body": "no text field"}', good[3],
             '{"text": 42}', good[4], json.dumps({"text": SPECIAL}), good[5]]
    data = "\n".join(lines).encode() + b"\n" + b'{"text": "caf\xe9 latin-1"}\n' + json.dumps({"text": "last"}).encode() + b"\n"
    (root / "en.jsonl").write_bytes(data)
    whole = gzip.compress("".join(json.dumps({"text": f"deutsch {i} " + "x" * 200}) + "\n" for i in range(400)).encode())
    (root / "de.jsonl.gz").write_bytes(whole[: len(whole) // 2])  # cut mid-stream
    (root / "sw.jsonl").write_bytes(b"")  # a language with nothing in it
    with open(root / "fr.txt", "wb") as f:  # one 100 MB line between two good ones, written in blocks
        f.write("bonjour\n".encode())
        block = b"a" * (1 << 20)
        for _ in range(100):
            f.write(block)
        f.write(b"\nau revoir\n")


def test_corrupt_files_are_counted_named_and_the_rest_kept(tmp_path, ledger):
    root = tmp_path / "corpus"
    _write_corpus(root)
    reader = sources.FilesReader(FilesSource(path=str(root)))
    assert reader.languages() == ["de", "en", "fr", "sw"]
    bad = sources.BadRecords()
    with ledger.fault("malformed, non-UTF-8 and field-less JSON lines"):
        en = [d.text for d in reader.documents("en", None, 0, bad)]
        assert en == [f"english document {i}" for i in range(5)] + [SPECIAL, "english document 5", "last"]
        assert bad.count == 5
        text = "\n".join(bad.messages)
        for line, words in ((2, "malformed JSON"), (4, "no string field"), (6, "no string field"),
                            (8, "no string field"), (12, "not valid UTF-8")):
            assert f"en.jsonl:{line}: {words}" in text, text
        ledger.lost("good English lines around 5 bad ones", 8 - len(en))
    with ledger.fault("special-token strings inside text"):
        assert SPECIAL in en  # kept verbatim, never read as markup
    with ledger.fault("truncated gzip"):
        before = bad.count
        de = list(reader.documents("de", None, 0, bad))
        assert 0 < len(de) < 400 and [d.text.split()[1] for d in de] == [str(i) for i in range(len(de))]
        assert bad.count == before + 1 and "truncated or corrupt gzip" in bad.messages[-1]
        assert "de.jsonl.gz" in bad.messages[-1]
    with ledger.fault("an empty language"):
        assert list(reader.documents("sw", None, 0, bad)) == []
        p = sampling.temperature_probs({"en": len(en), "de": len(de), "sw": 0})
        assert p["sw"] == 0.0 and abs(sum(p.values()) - 1) < 1e-12
    with ledger.fault("a single 100 MB line"):
        before = bad.count
        tracemalloc.start()
        fr = [d.text for d in reader.documents("fr", None, 0, bad)]
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert fr == ["bonjour", "au revoir"]
        assert bad.count == before + 1 and "fr.txt:2: line of 104,857,601 bytes" in bad.messages[-1]
        assert peak < 3 * sources.MAX_LINE_BYTES, peak  # never the whole line in memory
        ledger.lost("good French lines around a 100 MB one", 2 - len(fr))


def test_bad_record_policy_error_names_file_and_line(tmp_path, ledger):
    root = tmp_path / "corpus"
    _write_corpus(root)
    reader = sources.FilesReader(FilesSource(path=str(root)))
    ledger.bad_input("malformed JSON under on_bad_record: error",
                     lambda: list(reader.documents("en", None, 0, sources.BadRecords(policy="error"))),
                     "en.jsonl:2", error=sources.SourceError)


def test_missing_or_empty_source_folder_is_named(tmp_path, ledger):
    ledger.bad_input("files source folder missing", lambda: sources.FilesReader(FilesSource(path=str(tmp_path / "no"))).languages(),
                     str(tmp_path / "no"), error=sources.SourceError)
    ledger.bad_input("files source folder empty", lambda: sources.FilesReader(FilesSource(path=str(tmp_path))).languages(),
                     "is empty", error=sources.SourceError)


MARKUP = ["</s>", "<pad>", "<unk>", "<extra_id_0>", "<extra_id_1>", "<0x41>"]


def test_special_token_strings_through_the_real_etl(tmp_path, ledger):
    """Documents quoting </s>, <pad>, <unk>, <extra_id_0> ... (often enough that the tokenizer's
    sample is full of them) go through the whole ETL, with a SentencePiece model trained on that
    sample: the strings stay ordinary text (no pad, eos, unk or sentinel id, the text decodes
    back), and every output example has its sentinels in order, as span corruption put them, and
    the dataset holds no more EOS than its documents and examples account for."""
    import numpy as np

    from mt5study.config import validate
    from mt5study.data import etl
    from mt5study.data.tokenizer import Encoder, vocab_and_sentinels

    root = tmp_path / "corpus"
    root.mkdir()
    rng = np.random.default_rng(0)
    words = "the model reads a page of text and writes its answer between tags like".split()
    docs = {}
    for lang in ("en", "xx"):
        docs[lang] = [" ".join(rng.choice(words + MARKUP, size=60)) + f" {lang} {i}." for i in range(60)]
        (root / f"{lang}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in docs[lang]))
    params = validate({"etl": {"seed": 0, "num_proc": 1, "source": {"kind": "files", "files": {"path": str(root)}},
                               "cleaning": {"min_chars": 50}, "tokenizer": {"vocab_size": 400, "sample_chars": 60_000},
                               "corruption": {"inputs_length": 32}, "output": {"validation_fraction": 0.1}}}, "test")
    with ledger.fault("special-token strings in the text the tokenizer is trained on and encodes"):
        manifest = etl.run(params, tmp_path / "out")
        tok = tmp_path / "out" / "tokenizer"
        vocab, sentinels = vocab_and_sentinels(tok)
        specials = {0, 1, 2, *sentinels}
        enc = Encoder(str(tok))
        texts = docs["en"] + docs["xx"]
        ids = enc.encode(texts)
        assert not any(specials & set(row) for row in ids)  # never read as markup
        assert [enc.decode(row) for row in ids] == texts  # and nothing lost
        from datasets import load_from_disk

        ds = load_from_disk(str(tmp_path / "out" / "dataset"))
        rank = {s: k for k, s in enumerate(sentinels)}
        eos, examples = 0, 0
        for split in ("train", "validation"):
            assert manifest["num_examples"][split] == len(ds[split]) > 0
            for inputs, labels in zip(ds[split]["input_ids"], ds[split]["labels"]):
                got = [rank[t] for t in inputs if t in rank]
                assert got == list(range(len(got))) and got  # <extra_id_0>, <extra_id_1>, ... once each
                assert [rank[t] for t in labels if t in rank] == got
                assert 2 not in inputs and 2 not in labels
                eos, examples = eos + inputs.count(1) + labels.count(1), examples + 1
        # One EOS closes each input and target, one ends each document (a few more where the
        # mixing repeats examples of a language to exhaust the other); the ~350 quoted "</s>"
        # would add as many if they were read as EOS.
        assert sum(t.count("</s>") for t in texts) > 300
        assert eos - 2 * examples <= 1.5 * len(texts), (eos, len(texts), examples)
