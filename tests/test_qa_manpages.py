"""The embedded QA set: option entries parsed from groff's layout, answers located, split by command."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from mt5study.qa import loaders, manpages
from mt5study.qa.config import ManpagesQA, QASource

needs_groff = pytest.mark.skipif(shutil.which("groff") is None, reason="groff not installed (scripts/install_manpages.sh)")

PAGE = r"""
.TH {CMD} 1
.SH NAME
{cmd} \- a test command
.SH OPTIONS
.TP
.BR \-a ", " \-\-all
{all}
.TP
.B \-b
{brief}
.IP
A second paragraph of -b.
.TP
\fB\-\-width\fR=\fICOLS\fR
{width}
.TP
.B \-z
=
.SH NOTES
-- a line of running text that starts with dashes.
"""
TEXT = {
    "en": {"all": "show all entries of {cmd}", "brief": "brief output",
           "width": "Set the width. Columns beyond it are cut, which takes a great many words to explain in full."},
    "de": {"all": "alle Einträge von {cmd} anzeigen", "brief": "kurze Ausgabe",
           "width": "Setzt die Breite. Spalten dahinter werden abgeschnitten, was viele Worte braucht."},
}


def write_page(folder: Path, cmd: str, lang: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{cmd}.1.gz"
    path.write_bytes(gzip.compress(PAGE.format(CMD=cmd.upper(), cmd=cmd, **{k: v.format(cmd=cmd) for k, v in TEXT[lang].items()}).encode("utf-8")))
    return path


@pytest.fixture()
def man_dir(tmp_path) -> Path:
    """A man tree of 10 commands in English (man1/) and German (de/man1/), plus an alias."""
    for i in range(10):
        write_page(tmp_path / "man1", f"cmd{i}", "en")
        write_page(tmp_path / "de" / "man1", f"cmd{i}", "de")
    (tmp_path / "man1" / "alias.1.gz").write_bytes(gzip.compress(b".so man1/cmd0.1\n"))
    return tmp_path


@needs_groff
def test_entries_in_both_tag_layouts(man_dir):
    [entries] = manpages.parse_options(manpages.render_layout(str(man_dir / "man1" / "cmd0.1.gz")))
    got = {e.option: (e.tag, e.paragraphs) for e in entries}
    assert got["-a"] == ("-a, --all", ["show all entries of cmd0"])           # tag on its own line
    assert got["-b"] == ("-b", ["brief output", "A second paragraph of -b."])   # short tag: same line
    assert got["--width"][0] == "--width=COLS"
    assert "--" not in got  # running text that starts with dashes is no entry


@needs_groff
def test_alias_pages_are_skipped(man_dir):
    assert manpages.render_layout(str(man_dir / "man1" / "alias.1.gz")) is None


def test_answer_span_rules():
    assert manpages.answer_span("short one", 20) == ("short one", "paragraph")
    assert manpages.answer_span("First part. Then much more text here.", 20) == ("First part.", "first_sentence")
    assert manpages.answer_span("ディレクトリを表示する。その他の長い説明がここに続きます", 15) == ("ディレクトリを表示する。", "first_sentence")
    assert manpages.answer_span("no sentence end anywhere in this long text", 10) == (None, "too_long")


@needs_groff
def test_build_locates_answers_and_splits_by_command(man_dir):
    source = QASource(kind="manpages", validation_fraction=0.3,
                      manpages=ManpagesQA(man_dir=str(man_dir), max_answer_chars=40, workers=2))
    splits, report = manpages.build(source, seed=0)
    for rows in splits.values():
        for ex in rows:
            start, text = ex["answers"]["answer_start"][0], ex["answers"]["text"][0]
            assert ex["context"][start: start + len(text)] == text
    train_cmds = {ex["title"] for ex in splits["train"]}
    val_cmds = {ex["title"] for ex in splits["validation"]}
    assert train_cmds and val_cmds and not train_cmds & val_cmds  # split by command ...
    for lang in ("en", "de"):  # ... the same commands held out in every language
        assert {ex["title"] for ex in splits["validation"] if ex["lang"] == lang} == val_cmds
    assert not {ex["context"] for ex in splits["train"]} & {ex["context"] for ex in splits["validation"]}
    en = report["languages"]["en"]
    # per page: -a, -b (its first paragraph), --width cut to its first sentence; -z ("=") too short
    assert en["answer_paragraph"] == 20 and en["answer_first_sentence"] == 10 and en["answer_too_short"] == 10
    assert en["pages_listed"] == 10  # English keeps the commands another language translates: no alias
    q = {ex["question"] for ex in splits["train"] + splits["validation"] if ex["id"].endswith("/cmd3/-b")}
    assert q <= {"What does the option -b of cmd3 do?", "Was bewirkt die Option -b von cmd3?"} and len(q) == 2


@needs_groff
def test_which_option_asks_for_the_tag(man_dir):
    """task which_option: the description is in the question, the option's tag is the answer."""
    source = QASource(kind="manpages", validation_fraction=0.3,
                      manpages=ManpagesQA(man_dir=str(man_dir), max_answer_chars=40, task="which_option", workers=2))
    splits, report = manpages.build(source, seed=0)
    rows = {ex["id"]: ex for ex in splits["train"] + splits["validation"]}
    for ex in rows.values():
        start, text = ex["answers"]["answer_start"][0], ex["answers"]["text"][0]
        assert ex["context"][start: start + len(text)] == text
    a, w = rows["manpages/en/cmd3/-a"], rows["manpages/de/cmd3/--width"]
    assert a["question"] == "Which option of cmd3: show all entries of cmd3" and a["answers"]["text"] == ["-a, --all"]
    assert w["question"] == "Welche Option von cmd3: Setzt die Breite." and w["answers"]["text"] == ["--width=COLS"]
    assert report["languages"]["en"]["answer_too_short"] == 10  # "=" of -z: no description to quote


def test_every_language_has_both_templates():
    from mt5study.qa.config import QUESTION_TEMPLATES, WHICH_OPTION_TEMPLATES

    assert set(WHICH_OPTION_TEMPLATES) == set(QUESTION_TEMPLATES)
    assert all("{cmd}" in t and "{desc}" in t for t in WHICH_OPTION_TEMPLATES.values())


def test_unknown_language_is_refused_by_name():
    with pytest.raises(ValueError, match=r"no question template for languages \['xx'\]"):
        QASource(kind="manpages", languages=["de", "xx"])


@needs_groff
def test_limits_hold_out_at_least_one_command(man_dir):
    source = QASource(kind="manpages", languages=["de"], validation_fraction=0.2,
                      manpages=ManpagesQA(man_dir=str(man_dir), max_commands_per_language=3, max_questions_per_command=1))
    splits, report = manpages.build(source, seed=0)
    assert len(report["languages"]["de"]["commands"]["train"]) == 2
    assert len(report["languages"]["de"]["commands"]["validation"]) == 1
    assert len(splits["train"]) == 2 and len(splits["validation"]) == 1
    assert report["languages"]["de"]["questions_not_sampled"] == 3 * 2  # 3 usable options, 1 asked, per page


def test_split_is_a_stable_hash_of_the_command():
    names = [f"c{i}" for i in range(400)]
    held = [n for n in names if manpages.split_of(n, 0, 0.25) == "validation"]
    assert 60 < len(held) < 140
    assert held == [n for n in names if manpages.split_of(n, 0, 0.25) == "validation"]
    assert held != [n for n in names if manpages.split_of(n, 1, 0.25) == "validation"]


# --- the installed pages (CI installs them with scripts/install_manpages.sh) -----------------

LS = {"en": "/usr/share/man/man1/ls.1.gz", "de": "/usr/share/man/de/man1/ls.1.gz"}


@needs_groff
@pytest.mark.skipif(not all(Path(p).exists() for p in LS.values()), reason="ls pages not installed")
def test_real_ls_pages():
    en = {e.option: e for s in manpages.parse_options(manpages.render_layout(LS["en"])) for e in s}
    de = {e.option: e for s in manpages.parse_options(manpages.render_layout(LS["de"])) for e in s}
    assert en["-a"].tag == "-a, --all" and en["-a"].paragraphs[0] == "do not ignore entries starting with ."
    assert en["-C"].paragraphs[0] == "list entries by columns"  # a same-line entry
    assert de["-a"].tag == "-a, --all" and len(de) > 40
    assert set(en) & set(de) >= {"-a", "-l", "-r", "-t"}


@needs_groff
@pytest.mark.skipif(not Path("/usr/share/man/de/man1").is_dir(), reason="translated pages not installed")
def test_real_pages_through_the_loader():
    source = QASource(kind="manpages", languages=["de", "en"], validation_fraction=0.25,
                      manpages=ManpagesQA(max_commands_per_language=4, max_questions_per_command=3))
    splits, report = loaders.load(source, seed=0)
    for split in ("train", "validation"):
        assert {ex["lang"] for ex in splits[split]} == {"de", "en"}
        assert report[split]["languages"]["de"]["kept"] > 0
    assert not {ex["title"] for ex in splits["train"]} & {ex["title"] for ex in splits["validation"]}
