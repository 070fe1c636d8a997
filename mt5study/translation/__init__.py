"""Translation: parallel text from installed gettext catalogs and translated manual pages (or
TSV/JSONL files, or WMT/OPUS/FLORES through `datasets`), multilingual text-to-text fine-tuning
through the same trainer as pretraining and QA, and sacrebleu BLEU / chrF++ per pair.

    config.py    TranslationParams (params files whose top-level key is `translation:`)
    catalogs.py  gettext .mo catalogs (Babel): msgid -> msgstr, cleaned and counted
    manpages.py  option descriptions of one command aligned by flag across languages
    loaders.py   every source -> one record schema; files and `datasets` sets
    prepare.py   filters, splits by English string, temperature-balanced pairs, manifest
    evaluate.py  greedy and beam translations of the test strings, BLEU and chrF++ with signatures
    finetune.py  the study: base model -> data -> runs per start and seed -> scores, per-pair table
"""
