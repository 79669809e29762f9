"""The one record type every stage of locedit reads: a fact and its evaluation prompts."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from locedit.models.tokens import template_of


@dataclass(frozen=True)
class Fact:
    """A subject-relation-object fact with the prompts used to edit and evaluate it.

    ``prompt`` has the subject filled in; ``template`` has ``{}`` in its place. Targets are stored
    without a leading space (scoring adds exactly one).

    >>> fact = Fact(case_id=0, subject="Danielle Darrieux", prompt="The mother tongue of Danielle Darrieux is",
    ...             target_true="French", target_new="English")
    >>> fact.template
    'The mother tongue of {} is'
    >>> Fact.from_dict(fact.to_dict()) == fact
    True
    """

    case_id: int
    subject: str
    prompt: str
    target_true: str
    target_new: str | None = None
    paraphrase_prompts: tuple[str, ...] = ()
    neighborhood_prompts: tuple[str, ...] = ()
    neighborhood_target: str | None = None  # true object of the neighborhood prompts
    attribute_prompts: tuple[str, ...] = ()
    relation_id: str | None = None
    source: str = ""

    @property
    def template(self) -> str:
        return template_of(self.prompt, self.subject)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Fact":
        tuples = ("paraphrase_prompts", "neighborhood_prompts", "attribute_prompts")
        return cls(**{k: (tuple(v) if k in tuples else v) for k, v in d.items() if k in cls.__dataclass_fields__})


def adhoc_fact(prompt: str, subject: str, target_true: str | None = None, target_new: str | None = None,
               paraphrases: tuple[str, ...] = (), neighbors: tuple[str, ...] = ()) -> Fact:
    """A fact built from CLI arguments (``target_true`` may be filled in later from the model)."""
    return Fact(case_id=-1, subject=subject, prompt=prompt, target_true=target_true or "", target_new=target_new,
                paraphrase_prompts=paraphrases, neighborhood_prompts=neighbors, source="cli")
