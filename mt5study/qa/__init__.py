"""QA fine-tuning: SQuAD-format sets (hub, local files, or built from manual pages), text-to-text
fine-tuning of a pretrained mT5 through the same trainer, and EM/F1 scores per language.

    config.py    QAParams (params files whose top-level key is `qa:`)
    loaders.py   SQuAD / TyDi GoldP / XQuAD / MLQA records from the hub or local files
    manpages.py  the embedded multilingual set built from installed manual pages
    prepare.py   question + context windows -> the trainer's dataset schema
    metrics.py   squad_scores: SQuAD v1.1 and MLQA exact match and F1
    evaluate.py  greedy answers from a run's model/ folder, scores per language
    finetune.py  the study: base model -> data -> fine-tuning runs -> evaluation
"""

from mt5study.qa.metrics import squad_scores

__all__ = ["squad_scores"]
