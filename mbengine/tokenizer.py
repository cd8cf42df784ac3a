"""MobileBERT's tokenizer: uncased WordPiece on the ``tokenizers`` library.

The Rust ``tokenizers`` library does the work (normalisation: clean-up,
lower-casing, accent stripping, CJK splitting; pre-tokenisation; WordPiece;
the ``[CLS] A [SEP] B [SEP]`` template with token types; truncation with
overflow windows; offsets). This module loads it from a checkpoint directory,
checks the arguments, and returns NumPy arrays shaped as the models want, with
the behaviour of ``transformers.BertTokenizerFast`` called with
``return_tensors="np"``.

Known, deliberate differences from transformers:

* rows of different lengths (no padding, or rows longer than
  ``max_length`` with ``padding="max_length"`` and no truncation) come back
  as lists of 1-D arrays (transformers 5 makes object arrays of them, 4
  refuses);
* offsets of a batch whose rows are all empty are (batch, 0, 2), not
  (batch, 0);
* an empty batch gives empty ``(0, 0)`` arrays (transformers crashes);
* without ``model_max_length`` in tokenizer_config.json the limit used by
  ``truncation=True`` / ``padding="max_length"`` without ``max_length`` is
  512, MobileBERT's positions (transformers then means "no limit");
* ``do_lower_case`` / ``strip_accents`` / ``tokenize_chinese_chars`` missing
  from tokenizer_config.json keep what tokenizer.json says (transformers 5
  falls back to its defaults); when present they win, as in transformers.
"""

from __future__ import annotations

import json
import os
import threading

import numpy as np

from . import hub
from .errors import InputError, MBEngineError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
TRUNCATION = {
    True: "longest_first",
    "longest_first": "longest_first",
    "only_first": "only_first",
    "only_second": "only_second",
    False: None,
    "do_not_truncate": None,
}
PADDING = {False: None, "do_not_pad": None, True: "longest", "longest": "longest", "max_length": "max_length"}
DEFAULT_MAX_LENGTH = 512
# tokenizer_config.json keys -> BertNormalizer arguments
NORMALIZER_KEYS = {
    "do_lower_case": "lowercase",
    "strip_accents": "strip_accents",
    "tokenize_chinese_chars": "handle_chinese_chars",
}


class TokenizerError(MBEngineError):
    """A tokenizer that cannot be loaded or saved (missing or broken files)."""


class TokenizerTypeError(InputError, TypeError):
    """A tokenizer argument of the wrong type (both a ValueError and a TypeError)."""


# --------------------------------------------------------------------------- building
def _read_config(directory: str) -> dict:
    path = os.path.join(directory, "tokenizer_config.json")
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TokenizerError(f"{path}: cannot be read as JSON ({e})") from None
    if not isinstance(config, dict):
        raise TokenizerError(f"{path}: expected a JSON object, got {type(config).__name__}")
    for key in NORMALIZER_KEYS:
        value = config.get(key)
        if value is not None and not isinstance(value, bool):
            raise TokenizerError(f"{path}: {key} must be true, false or null, got {value!r}")
    return config


def _bert_template(tok):
    from tokenizers import processors

    return processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )


def _normalizer(config: dict, default: dict | None = None):
    """A BertNormalizer from tokenizer_config.json's keys; keys it lacks (or sets to null, but for
    strip_accents, whose null means "as lowercase") come from ``default``, else BERT's."""
    from tokenizers import normalizers

    args = {"clean_text": True, "lowercase": True, "strip_accents": None, "handle_chinese_chars": True}
    args.update(default or {})
    for key, arg in NORMALIZER_KEYS.items():
        if key in config and (config[key] is not None or arg == "strip_accents"):
            args[arg] = config[key]
    return normalizers.BertNormalizer(**args)


def _from_vocab(vocab_file: str, config: dict):
    """The BERT pipeline around a WordPiece model read from vocab.txt (one token a line, id = line)."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import WordPiece

    try:
        with open(vocab_file, encoding="utf-8") as f:
            vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}  # a repeated token keeps its last id
    except (OSError, UnicodeDecodeError) as e:
        raise TokenizerError(f"{vocab_file}: cannot be read as a UTF-8 vocabulary ({e})") from None
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise TokenizerError(f"{vocab_file}: the vocabulary lacks the special tokens {missing}")
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]", continuing_subword_prefix="##", max_input_chars_per_word=100))
    tok.normalizer = _normalizer(config)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = _bert_template(tok)
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens(list(SPECIAL_TOKENS))  # matched whole in the raw text, never split
    return tok


def _from_json(json_file: str, config: dict):
    from tokenizers import Tokenizer, normalizers

    try:
        tok = Tokenizer.from_file(json_file)
    except Exception as e:  # the Rust side raises a plain Exception
        raise TokenizerError(f"{json_file}: cannot be read as a tokenizer ({e})") from None
    norm = tok.normalizer
    if isinstance(norm, normalizers.BertNormalizer) and any(k in config for k in NORMALIZER_KEYS):
        tok.normalizer = _normalizer(
            config,
            default={
                "clean_text": norm.clean_text,
                "lowercase": norm.lowercase,
                "strip_accents": norm.strip_accents,
                "handle_chinese_chars": norm.handle_chinese_chars,
            },
        )
    if tok.post_processor is None and all(tok.token_to_id(t) is not None for t in ("[CLS]", "[SEP]")):
        tok.post_processor = _bert_template(tok)
    return tok


# --------------------------------------------------------------------------- argument checks
def _check_str(name: str, value) -> str:
    if not isinstance(value, str):
        raise TokenizerTypeError(f"{name} must be a str, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(
            f"{name} is not valid Unicode text: a lone surrogate {value[e.start]!r} at position {e.start}"
        ) from None
    return value


def _inputs(text, text_pair) -> list:
    """What ``encode_batch`` takes: a str or a (str, str) pair per item."""
    if isinstance(text, str):
        _check_str("text", text)
        if text_pair is None or (isinstance(text_pair, str) and not text_pair):
            return [text]  # transformers drops the empty pair of a single text
        if not isinstance(text_pair, str):
            raise TokenizerTypeError(f"text_pair must be a str when text is a str, got {type(text_pair).__name__}")
        return [(text, _check_str("text_pair", text_pair))]
    if not isinstance(text, (list, tuple)):
        raise TokenizerTypeError(f"text must be a str or a list of str, got {type(text).__name__}")
    if text_pair is None:
        items = []
        for i, item in enumerate(text):
            if isinstance(item, (list, tuple)) and len(item) == 2:  # a (text, text_pair) pair, as transformers takes
                items.append((_check_str(f"text[{i}][0]", item[0]), _check_str(f"text[{i}][1]", item[1])))
            else:
                items.append(_check_str(f"text[{i}]", item))
        return items
    if not isinstance(text_pair, (list, tuple)):
        raise TokenizerTypeError(f"text_pair must be a list of str when text is a list, got {type(text_pair).__name__}")
    if len(text_pair) != len(text):
        raise InputError(f"text has {len(text)} items but text_pair has {len(text_pair)}")
    return [
        (_check_str(f"text[{i}]", a), _check_str(f"text_pair[{i}]", b)) for i, (a, b) in enumerate(zip(text, text_pair))
    ]


def _count(name: str, value, low: int):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _choice(name: str, value, table: dict):
    try:
        return table[value]
    except (KeyError, TypeError):  # TypeError: an unhashable value
        allowed = ", ".join(repr(k) for k in table)
        raise InputError(f"{name} must be one of {allowed}, got {value!r}") from None


# --------------------------------------------------------------------------- the tokenizer
class MobileBertTokenizer:
    """WordPiece tokenizer with BertTokenizerFast's call signature and NumPy outputs."""

    unk_token, sep_token, pad_token, cls_token, mask_token = "[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]"

    def __init__(self, tokenizer, *, model_max_length: int = DEFAULT_MAX_LENGTH, source: str = "tokenizer"):
        missing = [t for t in SPECIAL_TOKENS if tokenizer.token_to_id(t) is None]
        if missing:
            raise TokenizerError(f"{source}: the vocabulary lacks the special tokens {missing}")
        self._tok = tokenizer
        self._lock = threading.Lock()  # truncation settings are tokenizer state
        self.model_max_length = model_max_length
        self.source = source
        self._tok.no_truncation()
        self._tok.no_padding()

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, revision: str | None = None) -> "MobileBertTokenizer":
        """From a directory with ``tokenizer.json`` (preferred) or ``vocab.txt``, or from one of those files.

        ``tokenizer_config.json`` next to them gives ``model_max_length`` and, for
        vocab.txt (or to override tokenizer.json), ``do_lower_case``,
        ``strip_accents`` and ``tokenize_chinese_chars``. ``path`` may also be a
        Hugging Face Hub model id, at ``revision`` (:mod:`mbengine.hub`).
        """
        path = hub.local_path(path, revision, weights=False)  # a Hub model id: its tokenizer files, cached
        if os.path.isdir(path):
            directory = path
            json_file, vocab_file = os.path.join(path, "tokenizer.json"), os.path.join(path, "vocab.txt")
            if not os.path.isfile(json_file):
                json_file = None
                if not os.path.isfile(vocab_file):
                    raise TokenizerError(f"{path}: no tokenizer.json or vocab.txt in this directory")
        elif os.path.isfile(path):
            directory = os.path.dirname(path)
            json_file, vocab_file = (path, None) if path.endswith(".json") else (None, path)
            if not path.endswith((".json", ".txt")):
                raise TokenizerError(f"{path}: not a tokenizer.json or vocab.txt file")
        else:
            raise TokenizerError(f"{path}: no such file or directory")
        config = _read_config(directory)
        max_len = config.get("model_max_length")
        if isinstance(max_len, bool) or not isinstance(max_len, int) or not 0 < max_len < 10**6:
            max_len = DEFAULT_MAX_LENGTH  # absent, or transformers' "no limit" (1e30)
        if json_file is not None:
            return cls(_from_json(json_file, config), model_max_length=max_len, source=json_file)
        return cls(_from_vocab(vocab_file, config), model_max_length=max_len, source=vocab_file)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write tokenizer.json, vocab.txt (line = id), tokenizer_config.json and special_tokens_map.json."""
        from tokenizers import normalizers

        vocab = sorted(self._tok.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1])
        if [i for _, i in vocab] != list(range(len(vocab))):
            raise TokenizerError("the vocabulary's ids have gaps: it cannot be written as vocab.txt")
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        self._tok.save(os.path.join(directory, "tokenizer.json"))
        with open(os.path.join(directory, "vocab.txt"), "w", encoding="utf-8") as f:
            f.writelines(token + "\n" for token, _ in vocab)
        specials = {
            "unk_token": "[UNK]",
            "sep_token": "[SEP]",
            "pad_token": "[PAD]",
            "cls_token": "[CLS]",
            "mask_token": "[MASK]",
        }
        config = {"tokenizer_class": "BertTokenizer", "model_max_length": self.model_max_length, **specials}
        norm = self._tok.normalizer
        if isinstance(norm, normalizers.BertNormalizer):
            config.update(
                do_lower_case=norm.lowercase,
                strip_accents=norm.strip_accents,
                tokenize_chinese_chars=norm.handle_chinese_chars,
            )
        for name, content in (("tokenizer_config.json", config), ("special_tokens_map.json", specials)):
            with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
                json.dump(content, f, indent=2)

    # -------------------------------------------------------------- vocabulary
    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def convert_tokens_to_ids(self, tokens):
        """A token's id ([UNK]'s for unknown tokens); a list gives a list."""
        if isinstance(tokens, str):
            i = self._tok.token_to_id(tokens)
            return self.unk_token_id if i is None else i
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids):
        """An id's token (None for an id outside the vocabulary); a sequence gives a list."""
        if isinstance(ids, (int, np.integer)):
            return self._tok.id_to_token(int(ids))
        return [self._tok.id_to_token(int(i)) for i in ids]

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        """Ids back to text ("##" pieces joined, spaces before punctuation cleaned up)."""
        return self._tok.decode([int(i) for i in np.asarray(ids).reshape(-1)], skip_special_tokens=skip_special_tokens)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Tokens back to text with the tokenizer's decoder."""
        if self._tok.decoder is not None:
            return self._tok.decoder.decode(list(tokens))
        return " ".join(tokens).replace(" ##", "").strip()

    def tokenize(self, text: str) -> list[str]:
        """The WordPiece tokens of one text, without [CLS]/[SEP]."""
        return self._tok.encode(_check_str("text", text), add_special_tokens=False).tokens

    @property
    def unk_token_id(self) -> int:
        return self._tok.token_to_id("[UNK]")

    @property
    def pad_token_id(self) -> int:
        return self._tok.token_to_id("[PAD]")

    @property
    def cls_token_id(self) -> int:
        return self._tok.token_to_id("[CLS]")

    @property
    def sep_token_id(self) -> int:
        return self._tok.token_to_id("[SEP]")

    @property
    def mask_token_id(self) -> int:
        return self._tok.token_to_id("[MASK]")

    @property
    def all_special_ids(self) -> list[int]:
        return [self._tok.token_to_id(t) for t in SPECIAL_TOKENS]

    # -------------------------------------------------------------------- call
    def __call__(
        self,
        text,
        text_pair=None,
        *,
        max_length: int | None = None,
        truncation=None,
        padding=False,
        return_overflowing_tokens: bool = False,
        stride: int = 0,
        return_offsets_mapping: bool = False,
        add_special_tokens: bool = True,
        return_token_type_ids: bool = True,
        return_attention_mask: bool = True,
        return_word_ids: bool = False,
    ) -> dict:
        """Encode a text, a batch of texts, or (batches of) text pairs into a dict of NumPy int64 arrays.

        ``text``: a str, or a list of str (or of ``(text, text_pair)`` tuples);
        ``text_pair``: None, or a str / list of str of the same length.

        Keys: ``input_ids``, ``token_type_ids`` (0 for [CLS] A [SEP], 1 for
        B [SEP]), ``attention_mask``, each (batch, seq) -- a single str is a
        batch of one, (1, seq); with ``return_offsets_mapping``
        ``offset_mapping`` (batch, seq, 2), character spans in each row's own
        text ((0, 0) for special and padding tokens); with
        ``return_word_ids`` ``word_ids`` (batch, seq), -1 for special tokens;
        with ``return_overflowing_tokens`` every overflow window (``stride``
        tokens shared with the previous one) is a row after its input's row,
        and ``overflow_to_sample_mapping`` (rows,) says which input it came
        from. Padding is on the right with [PAD] (type 0, mask 0, offsets
        (0, 0), word id -1). Rows of different lengths (unpadded, or longer
        than max_length with padding="max_length" and no truncation) come
        back as lists of 1-D arrays.

        As in transformers: ``truncation=None`` (not given) truncates
        (longest_first) only when ``max_length`` is given and ``padding`` is
        False; truncation or ``padding="max_length"`` without ``max_length``
        use ``model_max_length``; ``padding=True`` ignores ``max_length``; a
        single text with ``text_pair=""`` is encoded without the pair.
        """
        inputs = _inputs(text, text_pair)
        if max_length is not None:
            max_length = _count("max_length", max_length, 1)
        stride = _count("stride", stride, 0)
        pad = _choice("padding", padding, PADDING)
        if truncation is None:
            truncation = "longest_first" if max_length is not None and padding is False else False
        strategy = _choice("truncation", truncation, TRUNCATION)
        limit = self.model_max_length if max_length is None else max_length

        with self._lock:
            try:
                if strategy is not None:
                    self._tok.enable_truncation(limit, stride=stride, strategy=strategy)
                encodings = self._tok.encode_batch(inputs, add_special_tokens=add_special_tokens)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as e:  # a plain Exception, or a Rust panic (a BaseException) for bad settings
                msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise InputError(
                    f"cannot encode the text with max_length={limit}, stride={stride}, truncation={truncation!r}: {msg}"
                ) from None
            finally:
                self._tok.no_truncation()

        rows, sample = [], []
        for i, enc in enumerate(encodings):
            for row in [enc, *enc.overflowing] if return_overflowing_tokens else [enc]:
                rows.append(row)
                sample.append(i)
        fields = {"input_ids": ([r.ids for r in rows], self.pad_token_id)}
        if return_token_type_ids:
            fields["token_type_ids"] = ([r.type_ids for r in rows], 0)
        if return_attention_mask:
            fields["attention_mask"] = ([r.attention_mask for r in rows], 0)
        if return_offsets_mapping:
            fields["offset_mapping"] = ([r.offsets for r in rows], 0)
        if return_word_ids:
            fields["word_ids"] = ([[-1 if w is None else w for w in r.word_ids] for r in rows], -1)

        # right padding: to the longest row, or to max_length (longer rows stay longer, as in transformers)
        target = {None: 0, "longest": max((len(r.ids) for r in rows), default=0), "max_length": limit}[pad]
        widths = [max(len(r.ids), target) for r in rows]
        out = {}
        for key, (values, fill) in fields.items():
            arrays = []
            for v, width in zip(values, widths):
                a = np.full((width, 2) if key == "offset_mapping" else (width,), fill, np.int64)
                if len(v):
                    a[: len(v)] = v
                arrays.append(a)
            if len(set(widths)) <= 1:  # one width: a (batch, seq) array
                shape = (len(rows), widths[0] if widths else target) + ((2,) if key == "offset_mapping" else ())
                out[key] = np.stack(arrays) if arrays else np.zeros(shape, np.int64)
            else:
                out[key] = arrays
        if return_overflowing_tokens:
            out["overflow_to_sample_mapping"] = np.asarray(sample, np.int64)
        return out

    def word_ids(self, text, text_pair=None) -> list[list[int | None]]:
        """Per input, the index of the word each token comes from (None for special tokens)."""
        inputs = _inputs(text, text_pair)
        return [enc.word_ids for enc in self._tok.encode_batch(inputs)]


# Hugging Face has a slow (pure Python) and a fast (Rust ``tokenizers``) class; ours is the
# fast one already, so both documented names are the same class.
MobileBertTokenizerFast = MobileBertTokenizer
