"""Every name of the Hugging Face MobileBERT docs page (PyTorch side) is importable from mbengine.

The list is the docs page's: the config, both tokenizer names, the eight model
classes and the output classes their forward passes return. Output classes are
checked against transformers' own: same name, and every field of ours is a
field of theirs. (The docs' TFMobileBert* classes are TensorFlow models; their
tf_model.h5 checkpoints load into these same classes.)
"""

import dataclasses
import typing

import pytest

import mbengine

CONFIG_AND_TOKENIZERS = ["MobileBertConfig", "MobileBertTokenizer", "MobileBertTokenizerFast"]
MODELS = {  # model class -> the output class its forward returns (as in transformers)
    "MobileBertModel": "BaseModelOutputWithPooling",
    "MobileBertForPreTraining": "MobileBertForPreTrainingOutput",
    "MobileBertForMaskedLM": "MaskedLMOutput",
    "MobileBertForNextSentencePrediction": "NextSentencePredictorOutput",
    "MobileBertForSequenceClassification": "SequenceClassifierOutput",
    "MobileBertForMultipleChoice": "MultipleChoiceModelOutput",
    "MobileBertForTokenClassification": "TokenClassifierOutput",
    "MobileBertForQuestionAnswering": "QuestionAnsweringModelOutput",
}


@pytest.mark.parametrize(
    "name", CONFIG_AND_TOKENIZERS + list(MODELS) + sorted(set(MODELS.values())) + ["MobileBertPreTrainedModel"]
)
def test_name_is_exported(name):
    assert name in mbengine.__all__
    assert getattr(mbengine, name).__name__ in (name, "MobileBertTokenizer")  # Fast: the same class


def test_fast_tokenizer_is_ours():
    assert mbengine.MobileBertTokenizerFast is mbengine.MobileBertTokenizer


@pytest.mark.parametrize("model, output", sorted(MODELS.items()))
def test_output_classes_match_transformers(model, output):
    import transformers
    from transformers.models.mobilebert import modeling_mobilebert

    ours = getattr(mbengine, output)
    theirs = getattr(transformers.modeling_outputs, output, None) or getattr(modeling_mobilebert, output)
    assert {f.name for f in dataclasses.fields(ours)} <= {f.name for f in dataclasses.fields(theirs)}
    assert issubclass(getattr(mbengine, model), mbengine.MobileBertPreTrainedModel)
    returns = str(typing.get_type_hints(getattr(transformers, model).forward).get("return"))
    assert output in returns, (model, returns)  # the table above is transformers' own pairing


@pytest.mark.parametrize("output", sorted(set(MODELS.values())))
def test_output_classes_are_made_once_and_behave_as_dataclasses(output):
    import pickle

    from mbengine import outputs

    cls = getattr(mbengine, output)
    assert cls is getattr(outputs, output) and cls.__module__ == "mbengine.outputs"
    assert dataclasses.is_dataclass(cls) and issubclass(cls, outputs.ModelOutput)
    first = dataclasses.fields(cls)[0].name
    out = cls(**{f.name: None for f in dataclasses.fields(cls)} | {first: [1.0]})
    back = pickle.loads(pickle.dumps(out))  # (found again by its module and name)
    assert type(back) is cls and back[first] == [1.0] and back.keys() == [first]
    assert dataclasses.asdict(out)[first] == [1.0]


def test_an_unknown_output_name_is_an_attribute_error():
    from mbengine import outputs

    with pytest.raises(AttributeError, match="NoSuchOutput"):
        outputs.NoSuchOutput
