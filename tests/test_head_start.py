"""The pretrained start's head start, from synthetic curves whose answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mt5study import head_start as H


def _curves(shift: int, seeds: int = 3, noise: float = 0.01, crossing: bool = False) -> pd.DataFrame:
    """random init's loss L(step); the pretrained start's L(step + shift) (already `shift` steps in),
    or, with `crossing`, ahead early and 0.3 above random from step 80 on."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(seeds):
        for step in range(10, 160, 10):
            base = 4.0 + 4.0 * np.exp(-step / 30)
            pre = 4.0 + 4.0 * np.exp(-(step + shift) / 30)
            if crossing and step >= 80:
                pre = base + 0.3
            batch = rng.normal(0, 0.2)  # the same data order: the same batch noise for both starts
            for init, loss in (("random_init", base), ("pretrained", pre)):
                rows.append({"init": init, "seed": seed, "step": step, "loss": loss + batch + rng.normal(0, noise),
                             "eval_loss": loss + rng.normal(0, noise) if step % 50 == 0 else None})
    return pd.DataFrame(rows)


def test_a_shifted_curve_is_worth_its_shift():
    h = H.head_start(_curves(shift=30))
    assert h.seeds == 3 and h.first_step == 10 and h.lead_first.low > 0
    assert h.worth_steps == 30
    assert h.behind_from is None
    text = H.text(h)
    assert "worth about 30 fine-tuning steps" in text and "held-out loss at step 150" in text


def test_a_lead_that_runs_out_and_turns():
    h = H.head_start(_curves(shift=30, crossing=True))
    assert h.lead_until is not None and h.lead_until < 80 and not h.lead_after
    assert h.behind_from == 80
    assert "worse than random initialisation on held-out loss at step 150" in H.text(h)
    table = H.lead_table(_curves(shift=30, crossing=True))
    assert list(table["step"]) == list(range(10, 160, 10)) and (table.loc[table.step >= 80, "lead"] < 0).all()


def test_no_lead_and_one_seed():
    h = H.head_start(_curves(shift=0))
    assert h.lead_until is None and h.worth_steps == 0
    one = H.head_start(_curves(shift=30, seeds=1))
    assert not one.lead_first.measurable and "no spread can be given" in H.text(one)
    assert H.head_start(_curves(shift=30).query("init == 'pretrained'")) is None
    assert "compare_random_init" in H.text(None)


def test_progress_lines_are_single_writes(monkeypatch):
    """records.say: text and newline in one write, so threads' lines cannot run into each other."""
    import sys

    from mt5study import records

    writes = []

    class Stream:
        def write(self, s):
            writes.append(s)

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", Stream())
    records.say("[qa] fine-tuning from pretrained, seed 0")
    assert writes == ["[qa] fine-tuning from pretrained, seed 0\n"]
    assert records.loss_text(5.16547) == "5.165" and records.loss_text(None) == "none"
