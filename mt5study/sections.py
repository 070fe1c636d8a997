"""The base of every params section, in a module of its own so that `config` and the schemas
it composes (`slurm_config`, ...) can both import it without importing each other first."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base of every config section: no unknown keys, no type coercion, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, validate_default=True)
