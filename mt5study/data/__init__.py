"""The ETL: sources, cleaning, balanced sampling, tokenizer and T5 span corruption.

`mt5study.data.etl.run(params, out)` runs the whole ETL; the pure functions below are the
pieces other modules and tests use directly.
"""

from mt5study.data.corruption import span_corrupt, span_corrupt_batch, span_corruption_lengths
from mt5study.data.sampling import temperature_probs

__all__ = ["span_corrupt", "span_corrupt_batch", "span_corruption_lengths", "temperature_probs"]
