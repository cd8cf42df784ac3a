"""The models' outputs: dataclasses with Hugging Face's names and fields, numpy float32 arrays.

Each class is made the first time it is asked for (``mbengine.outputs.MaskedLMOutput``, or
``from mbengine.outputs import MaskedLMOutput``), then kept: a serving process returns one kind, and
Python builds a dataclass's methods from source as it defines it, ~0.3 ms a class, ~3 ms for all
nine at every start. Made or not, they are ordinary dataclasses (``dataclasses.fields``, ``asdict``,
pickle): the first fields are the task's arrays, then ``hidden_states`` (num_layers + 1 arrays
(batch, seq, hidden)) and ``attentions`` (num_layers arrays (batch, heads, seq, seq)), None unless
asked for.
"""

from __future__ import annotations

import dataclasses

# class name -> its task's fields: (name, shape; "or None" when the field may be None)
OUTPUTS = {
    "BaseModelOutputWithPooling": (
        ("last_hidden_state", "(batch, seq, hidden)"),
        ("pooler_output", "(batch, hidden), or None without a pooler"),
    ),
    "MobileBertForPreTrainingOutput": (
        ("prediction_logits", "(batch, seq, vocab)"),
        ("seq_relationship_logits", "(batch, 2)"),
    ),
    "MaskedLMOutput": (("logits", "(batch, seq, vocab)"),),
    "NextSentencePredictorOutput": (("logits", '(batch, 2): index 0 "B follows A", 1 "B is random"'),),
    "SequenceClassifierOutput": (("logits", "(batch, num_labels)"),),
    "MultipleChoiceModelOutput": (("logits", "(batch, num_choices)"),),
    "TokenClassifierOutput": (("logits", "(batch, seq, num_labels)"),),
    "QuestionAnsweringModelOutput": (("start_logits", "(batch, seq)"), ("end_logits", "(batch, seq)")),
}

__all__ = ["ModelOutput", *OUTPUTS]


@dataclasses.dataclass(eq=False)
class ModelOutput:
    """Base of the output dataclasses: fields by attribute or by name (``out["logits"]``)."""

    def __getitem__(self, key):
        return getattr(self, key)

    def keys(self):
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]


def __getattr__(name: str):
    if name not in OUTPUTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    fields = []
    for field, shape in OUTPUTS[name]:
        fields.append((field, "np.ndarray | None", None) if "or None" in shape else (field, "np.ndarray"))
    fields += [("hidden_states", "tuple | None", None), ("attentions", "tuple | None", None)]
    doc = "Fields (numpy float32): " + "; ".join(f"{field} {shape}" for field, shape in OUTPUTS[name])
    namespace = {"__module__": __name__, "__doc__": doc}
    cls = dataclasses.make_dataclass(name, fields, bases=(ModelOutput,), eq=False, namespace=namespace)
    return globals().setdefault(name, cls)  # (two threads asking at once get the same class)


def __dir__():
    return sorted({*globals(), *OUTPUTS})
