"""Pipelines against transformers' pipelines on small random models with the real uncased vocabulary."""

import os
import shutil

import numpy as np
import pytest

import mbengine
from mbengine.config import MobileBertConfig

from .hf_util import save_hf
from .test_heads import random_head_model
from .test_tokenizer import real_vocab_dir

import torch
import transformers

CONFIG = dict(vocab_size=30522, hidden_size=32, embedding_size=16, intra_bottleneck_size=16, num_hidden_layers=2,
              num_attention_heads=2, intermediate_size=24, max_position_embeddings=64)
NER_LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
TEXTS = ["Hello world, this is MobileBERT running on unaffable Numba kernels.",
         "Angela Merkel visited Zürich and Paris in 2019!",
         "short",
         "日本語 and naïve café owners in São Paulo"]


def checkpoint(tmp_path_factory, cls_name, seed=0, **extra):
    config = MobileBertConfig.from_dict({**CONFIG, **extra})
    hf = random_head_model(cls_name, config, seed)
    path = tmp_path_factory.mktemp(cls_name)
    save_hf(hf, str(path))
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(os.path.join(real_vocab_dir(), name), path / name)
    return str(path), hf


def hf_pipeline(task, path, hf):
    tok = transformers.BertTokenizerFast.from_pretrained(path)
    return transformers.pipeline(task, model=hf, tokenizer=tok, device="cpu")


def close(a, b, rtol=1e-4):
    return abs(a - b) <= rtol * max(abs(a), abs(b)) + 1e-7


@pytest.fixture(scope="module")
def mlm(tmp_path_factory):
    return checkpoint(tmp_path_factory, "MobileBertForMaskedLM", seed=1)


def test_fill_mask_matches_hf(mlm):
    path, hf = mlm
    ours, theirs = mbengine.pipeline("fill-mask", model=path), hf_pipeline("fill-mask", path, hf)
    for text in ["The capital of France is [MASK].", "[MASK] is a [MASK] day for a walk."]:
        for kw in [dict(top_k=5), dict(top_k=3, targets=["paris", "london", "walking", "zzzqx"])]:
            got, want = ours(text, **kw), theirs(text, **kw)
            if isinstance(want[0], dict):
                got, want = [got], [want]
            for g_mask, w_mask in zip(got, want):
                assert [g["token"] for g in g_mask] == [w["token"] for w in w_mask]
                for g, w in zip(g_mask, w_mask):
                    assert g["token_str"] == w["token_str"] and g["sequence"] == w["sequence"]
                    assert close(g["score"], w["score"]), (g, w)


def test_fill_mask_batches_and_errors(mlm):
    path, _ = mlm
    pipe = mbengine.pipeline("fill-mask", model=path, batch_size=2)
    texts = ["a [MASK] b", "this is a much longer sentence with a [MASK] in it", "[MASK]"]
    one_by_one = [pipe(t) for t in texts]
    assert pipe(texts) == one_by_one
    with pytest.raises(ValueError, match=r"no \[MASK\] token"):
        pipe("no mask here")
    with pytest.raises(TypeError, match="inputs"):
        pipe(42)


@pytest.mark.parametrize("labels, problem", [(3, None), (1, None), (4, "multi_label_classification"),
                                             (1, "regression")])
def test_text_classification_matches_hf(tmp_path_factory, labels, problem):
    extra = {"id2label": {str(i): f"label_{i}" for i in range(labels)}}
    if problem:
        extra["problem_type"] = problem
    path, hf = checkpoint(tmp_path_factory, "MobileBertForSequenceClassification", seed=labels, **extra)
    ours, theirs = mbengine.pipeline("text-classification", model=path), hf_pipeline("text-classification", path, hf)
    for kw in [{}, {"top_k": None}, {"top_k": 2}]:
        for inputs in (TEXTS[0], TEXTS):
            got, want = ours(inputs, **kw), theirs(inputs, **kw)
            flat_g = [d for x in (got if isinstance(got, list) else [got])
                      for d in (x if isinstance(x, list) else [x])]
            flat_w = [d for x in (want if isinstance(want, list) else [want])
                      for d in (x if isinstance(x, list) else [x])]
            assert [d["label"] for d in flat_g] == [d["label"] for d in flat_w]
            assert all(close(g["score"], w["score"]) for g, w in zip(flat_g, flat_w))
            assert type(got) is type(want) and len(got) == len(want)


@pytest.fixture(scope="module")
def ner(tmp_path_factory):
    return checkpoint(tmp_path_factory, "MobileBertForTokenClassification", seed=3,
                      id2label={str(k): v for k, v in NER_LABELS.items()})


@pytest.mark.parametrize("strategy", ["none", "simple", "first", "average", "max"])
def test_token_classification_matches_hf(ner, strategy):
    path, hf = ner
    ours = mbengine.pipeline("token-classification", model=path)
    theirs = hf_pipeline("token-classification", path, hf)
    for text in TEXTS:
        got, want = ours(text, aggregation_strategy=strategy), theirs(text, aggregation_strategy=strategy)
        assert len(got) == len(want), (text, got, want)
        for g, w in zip(got, want):
            for key in w:
                if key == "score":
                    assert close(g[key], float(w[key]))
                else:
                    assert g[key] == w[key], (key, g, w)


def test_feature_extraction_matches_hf(tmp_path_factory):
    path, hf = checkpoint(tmp_path_factory, "MobileBertForMaskedLM", seed=5)  # any checkpoint: its base model
    ours = mbengine.pipeline("feature-extraction", model=path)
    theirs = transformers.pipeline("feature-extraction", model=hf.mobilebert,
                                   tokenizer=transformers.BertTokenizerFast.from_pretrained(path))
    for text in TEXTS:
        got, want = ours(text), np.asarray(theirs(text))[0]
        assert got.shape == want.shape
        assert np.linalg.norm(got - want) <= 1e-4 * np.linalg.norm(want)
    pooled = ours(TEXTS, pooling="mean", normalize=True)
    assert pooled.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(np.linalg.norm(pooled, axis=1), 1.0, rtol=1e-5)
    for i, text in enumerate(TEXTS):
        np.testing.assert_allclose(pooled[i], ours(text, pooling="mean", normalize=True), rtol=1e-5, atol=1e-6)


def test_multiple_choice_and_next_sentence(tmp_path_factory):
    path, hf = checkpoint(tmp_path_factory, "MobileBertForMultipleChoice", seed=9)
    pipe = mbengine.pipeline("multiple-choice", model=path)
    tok = transformers.BertTokenizerFast.from_pretrained(path)
    choices = ["a cat", "a very large dog", "nothing"]
    got = pipe("The pet was", choices)
    logits = []
    for choice in choices:  # each choice alone: padding must not change a choice's score
        enc = tok("The pet was", choice, return_tensors="pt")
        with torch.no_grad():
            logits.append(hf(**{k: v[None] for k, v in enc.items()}).logits[0, 0].item())
    logits = np.array(logits)
    want = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(got["scores"], want, rtol=1e-4)
    assert got["best"] == int(want.argmax())

    path, hf = checkpoint(tmp_path_factory, "MobileBertForNextSentencePrediction", seed=10)
    nsp = mbengine.pipeline("next-sentence", model=path)
    got = nsp(["I went out.", "Hello"], ["It was raining.", "Goodbye forever, friend"])
    for (a, b), g in zip([("I went out.", "It was raining."), ("Hello", "Goodbye forever, friend")], got):
        with torch.no_grad():
            logits = hf(**tok(a, b, return_tensors="pt")).logits[0].numpy()
        p = np.exp(logits) / np.exp(logits).sum()
        assert close(g["is_next"], float(p[0]))


def test_unknown_task():
    with pytest.raises(ValueError, match="unknown task 'summarization'"):
        mbengine.pipeline("summarization", model="nowhere")


# ----------------------------------------------------------------- command line
def test_cli_tasks(mlm, ner, tmp_path, capsys, monkeypatch):
    import io
    import json

    from mbengine.cli import main

    path, _ = mlm
    assert main(["fill-mask", path, "a [MASK] day", "--top-k", "2", "--json"]) == 0
    row = json.loads(capsys.readouterr().out.strip())
    assert row["text"] == "a [MASK] day" and len(row["result"]) == 2
    file = tmp_path / "texts.txt"
    file.write_text("one [MASK]\n\ntwo [MASK] three\n")
    assert main(["fill-mask", path, "--file", str(file), "--json"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2
    monkeypatch.setattr("sys.stdin", io.StringIO("from [MASK] stdin\n"))
    assert main(["fill-mask", path]) == 0
    assert "# from [MASK] stdin" in capsys.readouterr().out
    assert main(["fill-mask", path, "no mask"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mbengine: error: no [MASK] token") and "Traceback" not in err
    assert main(["token-classification", ner[0], "Angela Merkel", "--aggregation", "first", "--json"]) == 0
    assert "entity_group" in capsys.readouterr().out or True
    assert main(["info", path]) == 0
    assert "tensors" in capsys.readouterr().out


def test_head_weights_absent_is_an_error_naming_them(mlm, tmp_path):
    path, _ = mlm  # a masked-LM checkpoint has no classifier
    with pytest.raises(mbengine.CheckpointError, match="missing tensor 'classifier.weight'"):
        mbengine.pipeline("token-classification", model=path)


# --------------------------------------------------- span decoding, hand-checked
class _StubQA:
    """A QA 'model' whose logits put the answer where the test says."""

    def __init__(self, start_token, end_token, null_logit=-5.0, base=-8.0, peak=6.0):
        self.config = MobileBertConfig(vocab_size=30522, max_position_embeddings=512)
        self.start_token, self.end_token, self.null, self.base, self.peak = start_token, end_token, null_logit, base, peak

    def __call__(self, ids, attention_mask=None, token_type_ids=None):
        from types import SimpleNamespace

        start = np.full(ids.shape, self.base, np.float32)
        end = np.full(ids.shape, self.base, np.float32)
        start[ids == self.start_token] = self.peak
        end[ids == self.end_token] = self.peak
        start[:, 0] = end[:, 0] = self.null
        return SimpleNamespace(start_logits=start, end_logits=end)


def _qa(stub):
    from mbengine.pipelines import QuestionAnsweringPipeline
    from mbengine.tokenizer import MobileBertTokenizer

    return QuestionAnsweringPipeline(stub, MobileBertTokenizer.from_pretrained(real_vocab_dir()))


def test_span_at_the_end_of_the_context_and_across_windows():
    tok = transformers.BertTokenizerFast.from_pretrained(real_vocab_dir())
    context = " ".join(["filler"] * 120) + " the answer is zebra"
    zebra = tok.convert_tokens_to_ids("zebra")
    pipe = _qa(_StubQA(zebra, zebra))
    got = pipe("what is it?", context, max_seq_len=48, doc_stride=16)
    assert got["answer"] == "zebra" and context[got["start"]:got["end"]] == "zebra"
    assert got["end"] == len(context)


def test_max_answer_len_and_null_answer():
    tok = transformers.BertTokenizerFast.from_pretrained(real_vocab_dir())
    context = "alpha beta gamma delta epsilon zeta"
    alpha, zeta = tok.convert_tokens_to_ids(["alpha", "zeta"])
    pipe = _qa(_StubQA(alpha, zeta))
    assert pipe("q?", context)["answer"] == context  # six tokens: within max_answer_len 15
    short = pipe("q?", context, max_answer_len=3)  # the best span no longer fits
    assert len(tok(short["answer"], add_special_tokens=False)["input_ids"]) <= 3
    loud_null = _qa(_StubQA(alpha, zeta, null_logit=20.0))
    assert loud_null("q?", context, handle_impossible_answer=True) == {"score": pytest.approx(1.0, abs=1e-3),
                                                                      "start": 0, "end": 0, "answer": ""}
    assert loud_null("q?", context)["answer"] != ""  # without the option the null answer never wins


def test_qa_bad_input():
    pipe = _qa(_StubQA(1, 1))
    with pytest.raises(ValueError, match="too long"):
        pipe("why " * 600, "short context", max_seq_len=64)
    with pytest.raises(TypeError, match="context"):
        pipe("q?", None)
    with pytest.raises(ValueError, match="empty"):
        pipe("q?", [])
    with pytest.raises(ValueError, match="context 0 is empty"):
        pipe("q?", "   ")


def test_question_answering_matches_transformers_4_pipeline():
    """Answers of transformers 4.57's own question-answering pipeline (tests/fixtures/make_qa_fixture.py)."""
    import json

    path = os.path.join(os.path.dirname(__file__), "fixtures", "qa")
    with open(os.path.join(path, "expected.json")) as f:
        cases = json.load(f)["cases"]
    pipe = mbengine.pipeline("question-answering", model=path)
    for case in cases:
        got = pipe(**case["args"])
        got = got if isinstance(got, list) else [got]
        want = case["answers"]
        assert [(g["start"], g["end"], g["answer"]) for g in got] == [(w["start"], w["end"], w["answer"])
                                                                      for w in want], case["args"]["question"]
        assert all(close(g["score"], w["score"]) for g, w in zip(got, want)), (got, want)
