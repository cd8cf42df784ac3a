"""Pipelines against transformers: version 5's pipelines live (fill-mask, text and token classification,
feature extraction) on small random models with the real uncased vocabulary, and the question-answering
answers that transformers 4.57 stored in tests/fixtures/pipelines/ (make_qa_fixture.py)."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
import transformers

import mbengine
from mbengine.config import MobileBertConfig

from .helpers import real_vocab_dir
from .hf_util import random_head_model, save_hf

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "pipelines")
CONFIG = dict(
    vocab_size=30522,
    hidden_size=32,
    embedding_size=16,
    intra_bottleneck_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=24,
    max_position_embeddings=64,
)
NER_LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC", 5: "MISC"}
TEXTS = [
    "Hello world, this is MobileBERT running on unaffable Numba kernels.",
    "Angela Merkel visited Zürich and Paris in 2019!",
    "short",
    "日本語 and naïve café owners in São Paulo ☃ [MASK] typed",
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one thread each for torch and our kernels (parallel regions only cost time here,
    a lot of it on a loaded machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pipeline(task, model, **kw):
    return mbengine.pipeline(task, model=model, threads=1, **kw)


def checkpoint(tmp_path_factory, cls_name, seed=0, model_max_length=None, zero_pad_embedding=False, **extra):
    config = MobileBertConfig.from_dict({**CONFIG, **extra})
    hf = random_head_model(cls_name, config, seed)
    if zero_pad_embedding:  # transformers pads windows: with a zero [PAD] row its trigram sees what we see
        with torch.no_grad():
            hf.get_input_embeddings().weight[0].zero_()
    path = tmp_path_factory.mktemp(cls_name)
    save_hf(hf, str(path))
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(os.path.join(real_vocab_dir(), name), path / name)
    if model_max_length is not None:
        tok_config = json.loads((path / "tokenizer_config.json").read_text())
        tok_config["model_max_length"] = model_max_length
        (path / "tokenizer_config.json").write_text(json.dumps(tok_config))
    return str(path), hf


def hf_pipeline(task, path, hf):
    tok = transformers.BertTokenizerFast.from_pretrained(path)
    return transformers.pipeline(task, model=hf, tokenizer=tok, device="cpu")


def close(a, b, rtol=1e-4):
    return abs(a - b) <= rtol * max(abs(a), abs(b)) + 1e-7


def assert_same(got, want, path="result"):
    """Same structure, same non-score values, scores within rtol 1e-4."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), (path, got, want)
        for key in want:
            assert_same(got[key], want[key], f"{path}[{key!r}]")
    elif isinstance(want, (list, tuple)):
        assert isinstance(got, list) and len(got) == len(want), (path, got, want)
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{path}[{i}]")
    elif isinstance(want, (float, np.floating)):
        assert isinstance(got, float) and close(got, float(want)), (path, got, want)
    else:
        assert type(got) is type(want.item() if isinstance(want, np.generic) else want) and got == want, (
            path,
            got,
            want,
        )


# ----------------------------------------------------------------------------- fill-mask
@pytest.fixture(scope="module")
def mlm(tmp_path_factory):
    return checkpoint(tmp_path_factory, "MobileBertForMaskedLM", seed=1)


def test_fill_mask_matches_hf(mlm):
    path, hf = mlm
    ours, theirs = pipeline("fill-mask", path), hf_pipeline("fill-mask", path, hf)
    texts = ["The capital of France is [MASK].", "[MASK] is a [MASK] day for a walk.", "[MASK]"]
    for kw in [
        {},
        dict(top_k=3),
        dict(top_k=7, targets=["paris", "london", "walking", "zzzqx", "Über", ""]),
        dict(targets="paris"),
        dict(top_k=2, targets=["##s", "[UNK]", "rome"]),
    ]:
        for text in texts:
            assert_same(ours(text, **kw), theirs(text, **kw))
        assert_same(ours(texts, **kw), theirs(texts, **kw))


def test_fill_mask_errors_and_truncation(mlm):
    path, _ = mlm
    pipe = pipeline("fill-mask", path)
    with pytest.raises(ValueError, match=r"inputs\[1\] has no \[MASK\] token"):
        pipe(["a [MASK]", "no mask here"])
    for bad, match in [(42, "inputs must be"), ([], "inputs is an empty list"), (["a [MASK]", 3], r"inputs\[1\]")]:
        with pytest.raises(ValueError, match=match):
            pipe(bad)
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        pipe("a [MASK]", top_k=0)
    with pytest.raises(ValueError, match="targets is an empty list"):
        pipe("a [MASK]", targets=[])
    with pytest.raises(ValueError, match="no target gives a token"):
        pipe("a [MASK]", targets=[""])
    long = "[MASK] " + "word " * 100
    with pytest.raises(ValueError, match="inputs is 103 tokens long, more than the 64 .* truncation=True"):
        pipe(long)
    assert len(pipe(long, tokenizer_kwargs={"truncation": True})) == 5


# ----------------------------------------------------------------------------- text-classification
@pytest.mark.parametrize(
    "labels, problem", [(3, None), (1, None), (4, "multi_label_classification"), (1, "regression")]
)
def test_text_classification_matches_hf(tmp_path_factory, labels, problem):
    extra = {"id2label": {str(i): f"label_{i}" for i in range(labels)}}
    if problem:
        extra["problem_type"] = problem
    path, hf = checkpoint(tmp_path_factory, "MobileBertForSequenceClassification", seed=labels, **extra)
    ours, theirs = pipeline("text-classification", path), hf_pipeline("text-classification", path, hf)
    pair = {"text": TEXTS[1], "text_pair": TEXTS[0]}
    for kw in [
        {},
        {"top_k": None},
        {"top_k": 2},
        {"top_k": 1},
        {"function_to_apply": "softmax", "top_k": None},
        {"function_to_apply": "SIGMOID"},
        {"function_to_apply": "none", "top_k": 3},
    ]:
        for inputs in (TEXTS[0], TEXTS, pair, [pair, TEXTS[2]]):
            assert_same(ours(inputs, **kw), theirs(inputs, **kw))
    assert_same(ours(TEXTS[0], text_pair="the pair"), theirs(TEXTS[0], text_pair="the pair"))


def test_text_classification_errors(tmp_path_factory):
    path, _ = checkpoint(
        tmp_path_factory, "MobileBertForSequenceClassification", seed=3, id2label={"0": "neg", "1": "pos"}
    )
    pipe = pipeline("sentiment-analysis", path)
    with pytest.raises(ValueError, match="function_to_apply must be"):
        pipe("x", function_to_apply="relu")
    with pytest.raises(ValueError, match=r"inputs\[1\] must be a str or a"):
        pipe(["x", None])
    with pytest.raises(ValueError, match=r"inputs must be a dict with the keys 'text'"):
        pipe({"txt": "x"})
    with pytest.raises(ValueError, match=r"inputs\[1\] is 102 tokens long"):
        pipe(["ok", "word " * 100])
    assert pipe("word " * 100, truncation=True)[0]["label"] in ("neg", "pos")


# ----------------------------------------------------------------------------- token-classification
@pytest.fixture(scope="module")
def ner(tmp_path_factory):
    return checkpoint(
        tmp_path_factory,
        "MobileBertForTokenClassification",
        seed=3,
        id2label={str(k): v for k, v in NER_LABELS.items()},
    )


@pytest.mark.parametrize("strategy", ["none", "simple", "first", "average", "max"])
def test_token_classification_matches_hf(ner, strategy):
    path, hf = ner
    ours = pipeline("token-classification", path)
    theirs = hf_pipeline("token-classification", path, hf)
    for kw in [{}, {"ignore_labels": []}, {"ignore_labels": ["O", "MISC", "B-PER"]}]:
        kw["aggregation_strategy"] = strategy
        for text in TEXTS:
            assert_same(ours(text, **kw), theirs(text, **kw))
        assert_same(ours(TEXTS, **kw), theirs(TEXTS, **kw))


@pytest.mark.parametrize("strategy", ["simple", "first", "average", "max"])
def test_token_classification_stride_windows_match_hf(tmp_path_factory, strategy):
    # the tokenizer's model_max_length (24) makes transformers and us cut the same windows
    path, hf = checkpoint(
        tmp_path_factory,
        "MobileBertForTokenClassification",
        seed=4,
        model_max_length=24,
        zero_pad_embedding=True,
        id2label={str(k): v for k, v in NER_LABELS.items()},
    )
    ours = pipeline("token-classification", path)
    theirs = hf_pipeline("token-classification", path, hf)
    text = " ".join(TEXTS[:2] + TEXTS[3:]) * 2
    for stride, ignore in [(8, None), (3, []), (0, ["O", "MISC"])]:
        kw = dict(aggregation_strategy=strategy, stride=stride, ignore_labels=ignore)
        got, want = ours(text, **kw), theirs(text, **kw)
        assert len(want) > 3
        assert_same(got, want)
    with pytest.raises(ValueError, match="stride must be less than 22"):
        ours(text, aggregation_strategy=strategy, stride=22)
    with pytest.raises(ValueError, match='stride needs an aggregation_strategy other than "none"'):
        ours(text, stride=4)


def test_token_classification_cuts_long_text_like_hf(tmp_path_factory):
    # transformers cuts at the tokenizer's limit: make it the model's 64 positions
    path, hf = checkpoint(
        tmp_path_factory,
        "MobileBertForTokenClassification",
        seed=5,
        model_max_length=64,
        id2label={str(k): v for k, v in NER_LABELS.items()},
    )
    ours = pipeline("ner", path)
    theirs = hf_pipeline("token-classification", path, hf)
    long = " ".join(TEXTS) * 4
    for strategy in ("none", "average"):
        assert_same(ours(long, aggregation_strategy=strategy), theirs(long, aggregation_strategy=strategy))
    with pytest.raises(ValueError, match="aggregation_strategy must be one of"):
        ours("x", aggregation_strategy="mean")


# ----------------------------------------------------------------------------- feature-extraction
def test_feature_extraction_matches_hf(tmp_path_factory):
    path, hf = checkpoint(tmp_path_factory, "MobileBertForMaskedLM", seed=5)  # any checkpoint: its base model
    ours = pipeline("feature-extraction", path, batch_size=3)
    theirs = transformers.pipeline(
        "feature-extraction", model=hf.mobilebert, tokenizer=transformers.BertTokenizerFast.from_pretrained(path)
    )
    tokens = ours(TEXTS)
    assert isinstance(tokens, list) and len(tokens) == len(TEXTS)
    want = [np.asarray(theirs(text))[0] for text in TEXTS]
    for got, ref in zip(tokens, want):
        assert got.dtype == np.float32 and got.shape == ref.shape
        assert np.linalg.norm(got - ref) <= 1e-4 * np.linalg.norm(ref)
    mean = ours(TEXTS, pooling="mean")
    cls = ours(TEXTS, pooling="cls", normalize=True)
    assert mean.shape == cls.shape == (len(TEXTS), 32)
    for i, ref in enumerate(want):
        np.testing.assert_allclose(mean[i], ref.mean(axis=0), rtol=1e-4, atol=1e-4 * np.abs(ref).max())
        np.testing.assert_allclose(cls[i], ref[0] / np.linalg.norm(ref[0]), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(cls, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(ours(TEXTS[1], pooling="mean"), mean[1])
    with pytest.raises(ValueError, match="pooling must be None, 'cls' or 'mean'"):
        ours("x", pooling="max")


# ----------------------------------------------------------------------------- question-answering
QA_CASES = json.load(open(os.path.join(FIXTURES, "qa_expected.json"), encoding="utf-8"))


@pytest.fixture(scope="module")
def qa_pipes():
    path = os.path.join(FIXTURES, "qa")
    return {bs: pipeline("question-answering", path, batch_size=bs) for bs in (1, 3, 8)}


def run_case(pipe, case):
    if case["context"] is None:
        return pipe(case["question"], **case["kwargs"])
    return pipe(case["question"], case["context"], **case["kwargs"])


@pytest.mark.parametrize("case", QA_CASES["cases"], ids=[c["name"] for c in QA_CASES["cases"]])
def test_question_answering_matches_transformers_4_57(qa_pipes, case):
    for batch_size, pipe in qa_pipes.items():
        assert_same(run_case(pipe, case), case["expected"], f"{case['name']} (batch_size {batch_size})")


def test_question_answering_matches_transformers_4_pipeline_default_init():
    """The other 4.57 fixture (tests/fixtures/make_qa_fixture.py): HF's default init, near-uniform scores."""
    path = os.path.join(os.path.dirname(__file__), "fixtures", "qa")
    with open(os.path.join(path, "expected.json"), encoding="utf-8") as f:
        cases = json.load(f)["cases"]
    pipe = pipeline("question-answering", path)
    for case in cases:
        want = case["answers"]
        assert_same(pipe(**case["args"]), want[0] if len(want) == 1 else want, case["args"]["question"])


def test_question_answering_fixture_is_small_and_versioned():
    assert QA_CASES["versions"]["transformers"].startswith("4.57")
    total = sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(FIXTURES) for f in files)
    assert total < 2_000_000, total


def test_question_answering_long_question_and_bad_input(qa_pipes):
    pipe = qa_pipes[8]
    context = QA_CASES["cases"][0]["context"]
    question = "Who walked on the surface " * 30 + "?"  # 151 tokens: no room beside it in 80
    got = pipe(question, context, max_seq_len=80, doc_stride=8)  # cut to max_question_len=64 tokens
    assert context[got["start"] : got["end"]] == got["answer"] and got["answer"]
    with pytest.raises(ValueError, match="no context token fits"):
        pipe(question, context, max_seq_len=80, max_question_len=78)
    with pytest.raises(ValueError, match="doc_stride=20 must be less than the 13 context tokens"):
        pipe(question, context, max_seq_len=80, doc_stride=20)
    with pytest.raises(ValueError, match=r"doc_stride \(90\) is larger than max_seq_len \(80\)"):
        pipe("who?", context, max_seq_len=80, doc_stride=90)
    with pytest.raises(ValueError, match="max_seq_len=600 is more than the model's 512 positions"):
        pipe("who?", context, max_seq_len=600)
    for args, match in [
        (("q?", None), "context is required"),
        (("q?", []), "context is an empty list"),
        (("q?", "   "), "context is empty"),
        (("", "text"), "question is empty"),
        ((["a?", "b?"], ["c", "d", "e"]), "2 questions but 3 contexts"),
        (("q?", ["c", "d"]), "one question but 2 contexts"),
        (([{"question": "q?"}],), r"question\[0\] must be a dict with the keys"),
    ]:
        with pytest.raises((ValueError, TypeError), match=match):
            pipe(*args)
    for kw, match in [
        ({"top_k": 0}, "top_k must be >= 1"),
        ({"max_answer_len": 0}, "max_answer_len must be >= 1"),
        ({"handle_impossible_answer": "yes"}, "handle_impossible_answer must be True or False"),
    ]:
        with pytest.raises(ValueError, match=match):
            pipe("q?", "text", **kw)


class _StubQA:
    """A QA 'model' whose logits put the answer where the test says."""

    def __init__(self, start_token, end_token, null_logit=-5.0, base=-8.0, peak=6.0):
        self.config = MobileBertConfig(vocab_size=30522, max_position_embeddings=512)
        self.start_token, self.end_token = start_token, end_token
        self.null, self.base, self.peak = null_logit, base, peak

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
    assert got["answer"] == "zebra" and context[got["start"] : got["end"]] == "zebra"
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
    assert loud_null("q?", context, handle_impossible_answer=True) == {
        "score": pytest.approx(1.0, abs=1e-3),
        "start": 0,
        "end": 0,
        "answer": "",
    }
    assert loud_null("q?", context)["answer"] != ""  # without the option the null answer never wins


# ----------------------------------------------------------------------------- multiple choice, next sentence
def test_multiple_choice_and_next_sentence(tmp_path_factory, monkeypatch):
    path, hf = checkpoint(tmp_path_factory, "MobileBertForMultipleChoice", seed=9)
    tok = transformers.BertTokenizerFast.from_pretrained(path)
    prompts = ["The pet was", "She opened the door and", "Numbers:"]
    choices = [
        ["a cat", "a very large dog", "nothing"],
        ["left.", "saw the garden behind the old house"],
        ["one", "two", "three and four"],
    ]
    results = {bs: pipeline("multiple-choice", path, batch_size=bs)(prompts, choices) for bs in (1, 3)}
    assert results[1] == results[3]
    # a token budget cuts the calls too (over all of a prompt's choices), and changes no result
    budget = pipeline("multiple-choice", path, batch_size=3, batch_tokens=30)
    calls, run = [], type(budget.model).__call__
    monkeypatch.setattr(
        type(budget.model),
        "__call__",
        lambda m, ids, **kw: calls.append(int(kw["attention_mask"].sum())) or run(m, ids, **kw),
    )
    assert budget(prompts, choices) == results[3]
    assert len(calls) >= 2 and all(n <= 30 for n in calls), calls
    for prompt, cs, got in zip(prompts, choices, results[3]):
        logits = []
        for choice in cs:  # each choice alone: padding must not change a choice's score
            enc = tok(prompt, choice, return_tensors="pt")
            with torch.no_grad():
                logits.append(hf(**{k: v[None] for k, v in enc.items()}).logits[0, 0].item())
        logits = np.array(logits)
        want = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        np.testing.assert_allclose(got["scores"], want, rtol=1e-4)
        assert got["best"] == int(want.argmax())
    single = pipeline("multiple-choice", path)(prompts[0], choices[0])
    assert single == results[1][0]
    with pytest.raises(ValueError, match="choices is an empty list"):
        pipeline("multiple-choice", path)("p", [])

    path, hf = checkpoint(tmp_path_factory, "MobileBertForNextSentencePrediction", seed=10)
    a = ["I went out.", "Hello", "The weather was fine and the streets were full of people"]
    b = ["It was raining.", "Goodbye forever, friend", "so we walked"]
    got = {bs: pipeline("next-sentence", path, batch_size=bs)(a, b) for bs in (1, 3)}
    assert got[1] == got[3]
    for x, y, g in zip(a, b, got[3]):
        with torch.no_grad():
            logits = hf(**tok(x, y, return_tensors="pt")).logits[0].numpy().astype(np.float64)
        p = np.exp(logits) / np.exp(logits).sum()
        assert close(g["is_next"], float(p[0]))
    with pytest.raises(ValueError, match="text_a and text_b must both be"):
        pipeline("next-sentence", path)(a, b[:2])


# ----------------------------------------------------------------------------- batching, order, errors
def test_batches_keep_input_order(mlm, ner, tmp_path_factory):
    texts = [
        "a [MASK] b",
        "this is a much longer sentence with a [MASK] in it, and more words after it",
        "[MASK]",
        "two [MASK] masks [MASK] here",
        "medium [MASK] sentence here",
    ]
    one, three = (pipeline("fill-mask", mlm[0], batch_size=bs) for bs in (1, 3))
    assert one(texts) == three(texts) == [three(t) for t in texts]
    plain = [t.replace("[MASK]", "x") for t in texts]
    one, three = (pipeline("token-classification", ner[0], batch_size=bs) for bs in (1, 3))
    for strategy in ("none", "first"):
        assert (
            one(plain, aggregation_strategy=strategy)
            == three(plain, aggregation_strategy=strategy)
            == [three(t, aggregation_strategy=strategy) for t in plain]
        )
    path, _ = checkpoint(
        tmp_path_factory, "MobileBertForSequenceClassification", seed=11, id2label={"0": "a", "1": "b", "2": "c"}
    )
    one, three = (pipeline("text-classification", path, batch_size=bs) for bs in (1, 3))
    assert one(plain, top_k=None) == three(plain, top_k=None) == [three(t, top_k=None) for t in plain]
    one, three = (pipeline("feature-extraction", mlm[0], batch_size=bs) for bs in (1, 3))
    budget = pipeline("feature-extraction", mlm[0], batch_size=64, batch_tokens=12)
    np.testing.assert_array_equal(one(plain, pooling="mean"), three(plain, pooling="mean"))
    np.testing.assert_array_equal(one(plain, pooling="mean"), budget(plain, pooling="mean"))
    for x, y, z in zip(one(plain), three(plain), budget(plain)):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)


class Recording:
    """A model stand-in that records each call's attention mask, then runs the real model."""

    def __init__(self, model):
        self.model, self.masks = model, []
        self.config = model.config

    def __call__(self, input_ids, attention_mask=None, **kw):
        self.masks.append(np.asarray(attention_mask).copy())
        return self.model(input_ids, attention_mask=attention_mask, **kw)


@pytest.mark.parametrize("batch_size, batch_tokens", [(3, None), (64, 20), (2, 20), (64, 1)])
def test_batches_by_rows_and_token_budget(mlm, batch_size, batch_tokens):
    """Batches are runs of the length-sorted texts, cut at batch_size rows and at batch_tokens real
    tokens (a text longer than the budget runs alone); every text runs once."""
    pipe = pipeline("feature-extraction", mlm[0], batch_size=batch_size, batch_tokens=batch_tokens)
    texts = ["a", "a b c d e f g h i j k l", "a b", "a b c d e", "a b c", "a b c d e f g", "x y"]
    want = [len(pipe.tokenizer(t)["input_ids"][0]) for t in texts]
    pipe.model = Recording(pipe.model)
    out = pipe(texts, pooling="mean")
    assert out.shape[0] == len(texts)
    lengths = [m.sum(axis=1).tolist() for m in pipe.model.masks]
    flat = [n for batch in lengths for n in batch]
    assert flat == sorted(want)  # each text once, shortest first
    for batch in lengths:
        assert len(batch) <= batch_size
        if batch_tokens is not None and len(batch) > 1:
            assert sum(batch) <= batch_tokens
    for a, b in zip(lengths, lengths[1:]):  # a batch is cut only when the next text would not fit
        assert len(a) == batch_size or batch_tokens is not None and sum(a) + b[0] > batch_tokens


def test_default_batches(mlm):
    """64 rows and 2048 real tokens a call; fill-mask, whose logits take a vocabulary per token, 256."""
    extract, fill = pipeline("feature-extraction", mlm[0]), pipeline("fill-mask", mlm[0])
    assert (extract.batch_size, extract.batch_tokens) == (64, 2048)
    assert (fill.batch_size, fill.batch_tokens) == (64, 256)
    assert pipeline("fill-mask", mlm[0], batch_tokens=None).batch_tokens is None  # None: no cap
    assert pipeline("fill-mask", mlm[0], batch_tokens="auto").batch_tokens == 256
    # what the cut means: 300 texts of 7 tokens, 64 a call by rows; 36 a call under a 256-token budget
    texts = ["a b c d e"] * 300
    lengths = [len(r["input_ids"]) for r in extract._encode(texts)]
    assert set(lengths) == {7}
    assert [len(b) for b in extract._batches(lengths)] == [64] * 4 + [44]
    assert [len(b) for b in fill._batches(lengths)] == [36] * 8 + [12]


def test_pipeline_arguments(mlm):
    with pytest.raises(ValueError, match="unknown task 'summarization'"):
        pipeline("summarization", "nowhere")
    with pytest.raises(ValueError, match="model is required"):
        mbengine.pipeline("fill-mask")
    with pytest.raises(ValueError, match="is not a directory"):
        pipeline("fill-mask", "/nonexistent/checkpoint")
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        pipeline("fill-mask", mlm[0], batch_size=0)
    with pytest.raises(ValueError, match="batch_tokens must be >= 1"):
        pipeline("fill-mask", mlm[0], batch_tokens=0)
    with pytest.raises(TypeError, match='batch_tokens must be "auto", an integer >= 1 or None, got str'):
        pipeline("feature-extraction", mlm[0], batch_tokens="many")
    with pytest.raises(ValueError, match="task must be a str"):
        mbengine.pipeline(None, model=mlm[0])
    model = mbengine.MobileBertForMaskedLM.from_pretrained(mlm[0], threads=1)
    with pytest.raises(ValueError, match="needs a tokenizer"):
        mbengine.pipeline("fill-mask", model=model)
    with pytest.raises(TypeError, match="model must be a checkpoint path or a MobileBertForSequenceClassification"):
        mbengine.pipeline("text-classification", model=model, tokenizer=mlm[0])
    with pytest.raises(ValueError, match="threads and model options apply when loading"):
        mbengine.pipeline("fill-mask", model=model, tokenizer=mlm[0], threads=2)
    pipe = mbengine.pipeline("fill-mask", model=model, tokenizer=mlm[0])
    assert pipe("a [MASK]", top_k=1)[0]["sequence"].startswith("a ")


def test_head_weights_absent_is_an_error_naming_them(mlm):
    """The error says which head the checkpoint has, and which head (which tensors) the task needs."""
    path, _ = mlm  # a masked-LM checkpoint has no classifier
    with pytest.raises(
        mbengine.CheckpointError,
        match=r"has a masked-LM head; MobileBertForTokenClassification "
        r"needs the token classification head \(classifier.bias, "
        r"classifier.weight\)",
    ):
        pipeline("token-classification", path)


# ----------------------------------------------------------------------------- command line
def test_cli_tasks(mlm, ner, tmp_path, capsys, monkeypatch):
    import io

    from mbengine.cli import main

    path, _ = mlm
    assert main(["fill-mask", path, "a [MASK] day", "--top-k", "2", "--json", "--threads", "1"]) == 0
    row = json.loads(capsys.readouterr().out.strip())
    assert row["text"] == "a [MASK] day" and len(row["result"]) == 2
    file = tmp_path / "texts.txt"
    file.write_text("one [MASK]\n\ntwo [MASK] three\n")
    assert main(["fill-mask", path, "--file", str(file), "--json", "--threads", "1"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2
    monkeypatch.setattr("sys.stdin", io.StringIO("from [MASK] stdin\n"))
    assert main(["fill-mask", path, "--threads", "1"]) == 0
    assert "# from [MASK] stdin" in capsys.readouterr().out
    assert main(["fill-mask", path, "no mask", "--threads", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mbengine: error: inputs[0] has no [MASK] token") and "Traceback" not in err
    assert (
        main(["token-classification", ner[0], "Angela Merkel", "--aggregation", "first", "--json", "--threads", "1"])
        == 0
    )
    assert json.loads(capsys.readouterr().out.strip())["text"] == "Angela Merkel"
    assert main(["info", path]) == 0
    assert "tensors" in capsys.readouterr().out


def test_cli_batch_options(mlm, capsys, monkeypatch):
    """--batch-size and --batch-tokens reach the pipeline: 'auto' (the default), 'none' or a number."""
    from mbengine import cli, pipelines

    made = []
    real = pipelines.pipeline
    monkeypatch.setattr(pipelines, "pipeline", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    for extra, expected in (
        ([], (64, 2048)),
        (["--batch-tokens", "none"], (64, None)),
        (["--batch-size", "3", "--batch-tokens", "40"], (3, 40)),
    ):
        assert cli.main(["feature-extraction", mlm[0], "a b", "--json", "--threads", "1", *extra]) == 0
        assert (made[-1].batch_size, made[-1].batch_tokens) == expected, extra
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli.main(["feature-extraction", mlm[0], "a b", "--batch-tokens", "lots"])
    assert "expected a number, 'none' or 'auto', got 'lots'" in capsys.readouterr().err


def test_cli_truncation(mlm, capsys):
    from mbengine.cli import main

    path, _ = mlm
    long = "a [MASK] " + "word " * 100  # beyond the 64 positions of the test model
    assert main(["fill-mask", path, long, "--threads", "1"]) == 1
    err = capsys.readouterr().err
    assert "truncation" in err and "Traceback" not in err
    assert main(["fill-mask", path, long, "--truncation", "--json", "--top-k", "1", "--threads", "1"]) == 0
    got = json.loads(capsys.readouterr().out)["result"]
    want = pipeline("fill-mask", path)(long, top_k=1, tokenizer_kwargs={"truncation": True})
    assert got[0]["token"] == want[0]["token"] and got[0]["sequence"] == want[0]["sequence"]
    assert main(["fill-mask", path, long, "--truncation", "--max-length", "8", "--json", "--threads", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["result"][0]["sequence"].count("word") <= 5  # 8 - cls, a, mask, sep
    assert main(["fill-mask", path, long, "--max-length", "8", "--threads", "1"]) == 2  # a usage error
    assert "--max-length applies only with --truncation" in capsys.readouterr().err
    # the base model of the same checkpoint: feature extraction cuts the same way
    assert main(["feature-extraction", path, long, "--threads", "1"]) == 1
    assert "truncation" in capsys.readouterr().err
    assert (
        main(["feature-extraction", path, long, "--truncation", "--max-length", "16", "--json", "--threads", "1"]) == 0
    )
    got = np.array(json.loads(capsys.readouterr().out)["result"])
    want = pipeline("feature-extraction", path)(long, pooling="mean", truncation=True, max_length=16)
    np.testing.assert_allclose(got, want, rtol=1e-6)
