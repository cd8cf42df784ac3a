"""mbengine: MobileBERT inference on hand-written Numba kernels.

    import mbengine
    model = mbengine.MobileBertModel.from_pretrained("path/to/checkpoint")
    out = model(input_ids, attention_mask=mask)
    out.last_hidden_state, out.pooler_output

Names are imported lazily so ``import mbengine`` stays cheap (no numba import
until a model is used).
"""

__version__ = "0.1.0"

_LAZY = {
    "MobileBertConfig": "mbengine.config",
    "MobileBertModel": "mbengine.modeling",
    "MobileBertForPreTraining": "mbengine.modeling",
    "MobileBertForMaskedLM": "mbengine.modeling",
    "MobileBertForNextSentencePrediction": "mbengine.modeling",
    "MobileBertForSequenceClassification": "mbengine.modeling",
    "MobileBertForMultipleChoice": "mbengine.modeling",
    "MobileBertForTokenClassification": "mbengine.modeling",
    "MobileBertForQuestionAnswering": "mbengine.modeling",
    "MobileBertPreTrainedModel": "mbengine.modeling",
    "BaseModelOutputWithPooling": "mbengine.outputs",
    "MobileBertForPreTrainingOutput": "mbengine.outputs",
    "MaskedLMOutput": "mbengine.outputs",
    "NextSentencePredictorOutput": "mbengine.outputs",
    "SequenceClassifierOutput": "mbengine.outputs",
    "MultipleChoiceModelOutput": "mbengine.outputs",
    "TokenClassifierOutput": "mbengine.outputs",
    "QuestionAnsweringModelOutput": "mbengine.outputs",
    "MobileBertTokenizer": "mbengine.tokenizer",
    "MobileBertTokenizerFast": "mbengine.tokenizer",
    "pipeline": "mbengine.pipelines",
    "MBEngineError": "mbengine.errors",
    "ConfigError": "mbengine.errors",
    "InputError": "mbengine.errors",
    "CheckpointError": "mbengine.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mbengine' has no attribute {name!r}")
