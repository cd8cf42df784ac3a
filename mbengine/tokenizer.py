"""MobileBERT's tokenizer: uncased WordPiece on the ``tokenizers`` library.

The Rust ``tokenizers`` library does the work (normalisation: clean-up,
lower-casing, accent stripping, CJK splitting; pre-tokenisation; WordPiece;
the ``[CLS] A [SEP] B [SEP]`` template with token types; truncation with
overflow windows; offsets). This module loads it from a checkpoint directory
and returns NumPy arrays shaped as the models want, with the behaviour of
``transformers.BertTokenizerFast`` called with ``return_tensors="np"``.
"""

from __future__ import annotations

import json
import os
import threading

import numpy as np

from .errors import MBEngineError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
TRUNCATION = {True: "longest_first", "longest_first": "longest_first", "only_first": "only_first",
              "only_second": "only_second"}
PADDING = {False: None, "do_not_pad": None, True: "longest", "longest": "longest", "max_length": "max_length"}


class TokenizerError(MBEngineError):
    """A tokenizer that cannot be loaded (missing or broken files)."""


def _bert_tokenizer_from_vocab(vocab_file: str, lowercase: bool = True, strip_accents: bool | None = None,
                               handle_chinese_chars: bool = True):
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    with open(vocab_file, encoding="utf-8") as f:
        tokens = [line.rstrip("\n") for line in f]
    vocab = {}
    for i, tok in enumerate(tokens):
        vocab.setdefault(tok, i)
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise TokenizerError(f"{vocab_file}: the vocabulary lacks the special tokens {missing}")
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]", continuing_subword_prefix="##",
                              max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=handle_chinese_chars,
                                                strip_accents=strip_accents, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens(list(SPECIAL_TOKENS))  # matched whole in the raw text, never split
    return tok


def _check_text(name: str, value, allow_none: bool = False) -> list[str] | None:
    """``value`` as a list of str; TypeError naming the argument otherwise."""
    if value is None and allow_none:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise TypeError(f"{name} must be a str or a list of str, got {type(value).__name__}")
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise TypeError(f"{name}[{i}] must be a str, got {type(item).__name__}")
        try:
            item.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(f"{name}[{i}] is not valid Unicode text ({e.reason} at position {e.start}: "
                             f"a lone surrogate {item[e.start]!r})") from None
    return list(items)


class MobileBertTokenizer:
    """WordPiece tokenizer with BertTokenizerFast's call signature (NumPy outputs)."""

    def __init__(self, tokenizer, *, model_max_length: int = 512, source: str = "tokenizer"):
        self._tok = tokenizer
        self._lock = threading.Lock()  # truncation/padding settings are tokenizer state
        self.model_max_length = model_max_length
        self.source = source
        for t in SPECIAL_TOKENS:
            if tokenizer.token_to_id(t) is None:
                raise TokenizerError(f"{source}: the vocabulary lacks the special token {t}")
        self._tok.no_truncation()
        self._tok.no_padding()

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "MobileBertTokenizer":
        """From a directory with ``tokenizer.json`` (preferred) or ``vocab.txt``, or one of those files."""
        from tokenizers import Tokenizer

        path = os.fspath(path)
        directory = path if os.path.isdir(path) else os.path.dirname(path)
        config = {}
        config_file = os.path.join(directory, "tokenizer_config.json")
        if os.path.isfile(config_file):
            try:
                with open(config_file, encoding="utf-8") as f:
                    config = json.load(f)
            except (OSError, json.JSONDecodeError) as e:
                raise TokenizerError(f"{config_file}: not valid JSON ({e})") from None
        max_len = config.get("model_max_length", 512)
        max_len = max_len if isinstance(max_len, int) and 0 < max_len < 10**6 else 512
        json_file = path if path.endswith(".json") else os.path.join(directory, "tokenizer.json")
        vocab_file = path if path.endswith(".txt") else os.path.join(directory, "vocab.txt")
        if os.path.isfile(json_file) and not path.endswith(".txt"):
            try:
                tok = Tokenizer.from_file(json_file)
            except Exception as e:  # the Rust side raises a plain Exception
                raise TokenizerError(f"{json_file}: cannot be read as a tokenizer ({e})") from None
            return cls(tok, model_max_length=max_len, source=json_file)
        if os.path.isfile(vocab_file):
            tok = _bert_tokenizer_from_vocab(
                vocab_file, lowercase=config.get("do_lower_case", True), strip_accents=config.get("strip_accents"),
                handle_chinese_chars=config.get("tokenize_chinese_chars", True))
            return cls(tok, model_max_length=max_len, source=vocab_file)
        raise TokenizerError(f"no tokenizer.json or vocab.txt in {directory or path}")

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write tokenizer.json and vocab.txt (ids in order)."""
        os.makedirs(directory, exist_ok=True)
        self._tok.save(os.path.join(directory, "tokenizer.json"))
        vocab = self._tok.get_vocab(with_added_tokens=True)
        with open(os.path.join(directory, "vocab.txt"), "w", encoding="utf-8") as f:
            for token, _ in sorted(vocab.items(), key=lambda kv: kv[1]):
                f.write(token + "\n")

    # -------------------------------------------------------------- vocabulary
    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def convert_tokens_to_ids(self, tokens):
        unk = self.unk_token_id
        if isinstance(tokens, str):
            i = self._tok.token_to_id(tokens)
            return unk if i is None else i
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids):
        if isinstance(ids, (int, np.integer)):
            return self._tok.id_to_token(int(ids))
        return [self._tok.id_to_token(int(i)) for i in ids]

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Tokens back to text with the tokenizer's decoder ("##" pieces joined, spaces cleaned up)."""
        if self._tok.decoder is not None:
            return self._tok.decoder.decode(list(tokens))
        return " ".join(tokens).replace(" ##", "").strip()

    def tokenize(self, text: str) -> list[str]:
        _check_text("text", text)
        return self._tok.encode(text, add_special_tokens=False).tokens

    unk_token, sep_token, pad_token, cls_token, mask_token = SPECIAL_TOKENS[1], "[SEP]", "[PAD]", "[CLS]", "[MASK]"

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
    def __call__(self, text, text_pair=None, *, max_length: int | None = None, truncation=False, padding=False,
                 return_overflowing_tokens: bool = False, stride: int = 0, return_offsets_mapping: bool = False,
                 add_special_tokens: bool = True, return_token_type_ids: bool = True,
                 return_attention_mask: bool = True, return_word_ids: bool = False) -> dict:
        """Encode texts (or pairs) into a dict of NumPy int64 arrays.

        Keys: ``input_ids``, ``token_type_ids``, ``attention_mask`` (batch,
        seq); with ``return_offsets_mapping`` ``offset_mapping`` (batch, seq,
        2), character spans in each row's own text; with
        ``return_overflowing_tokens`` every overflow window is its own row and
        ``overflow_to_sample_mapping`` says which input it came from. A single
        str gives a batch of one. Without padding, rows of different lengths
        come back as lists of 1-D arrays.
        """
        texts = _check_text("text", text)
        pairs = _check_text("text_pair", text_pair, allow_none=True)
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"text has {len(texts)} items but text_pair has {len(pairs)}")
        if truncation not in TRUNCATION and truncation not in (False, "do_not_truncate"):
            raise ValueError(f"truncation must be True, False, 'longest_first', 'only_first' or 'only_second', "
                             f"got {truncation!r}")
        if padding not in PADDING:
            raise ValueError(f"padding must be True, False, 'longest' or 'max_length', got {padding!r}")
        if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int)
                                       or max_length < 1):
            raise ValueError(f"max_length must be a positive integer, got {max_length!r}")
        if not isinstance(stride, int) or stride < 0:
            raise ValueError(f"stride must be a non-negative integer, got {stride!r}")
        strategy = TRUNCATION.get(truncation)
        pad = PADDING[padding]
        limit = max_length if max_length is not None else self.model_max_length
        if pad == "max_length" and max_length is None:
            limit = self.model_max_length
        inputs = texts if pairs is None else list(zip(texts, pairs))
        with self._lock:
            try:
                if strategy is not None:
                    self._tok.enable_truncation(limit, stride=stride, strategy=strategy)
                encodings = self._tok.encode_batch(inputs, add_special_tokens=add_special_tokens)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as e:  # a plain Exception, or a Rust panic (a BaseException) for bad settings
                msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ValueError(f"cannot encode the text with these settings (max_length={limit}, "
                                 f"stride={stride}, truncation={truncation!r}): {msg}") from None
            finally:
                self._tok.no_truncation()
        rows, sample = [], []
        for i, enc in enumerate(encodings):
            rows.append(enc)
            sample.append(i)
            if return_overflowing_tokens:
                for extra in enc.overflowing:
                    rows.append(extra)
                    sample.append(i)
        fields = {"input_ids": [r.ids for r in rows]}
        if return_token_type_ids:
            fields["token_type_ids"] = [r.type_ids for r in rows]
        if return_attention_mask:
            fields["attention_mask"] = [r.attention_mask for r in rows]
        if return_offsets_mapping:
            fields["offset_mapping"] = [r.offsets for r in rows]
        if return_word_ids:  # index of each token's word in its own text, -1 for special tokens
            fields["word_ids"] = [[-1 if w is None else w for w in r.word_ids] for r in rows]
        lengths = [len(r.ids) for r in rows]
        if pad is None and len(set(lengths)) > 1:
            out = {k: [np.asarray(v, np.int64).reshape(len(v), *(2,) if k == "offset_mapping" else ())
                       for v in vals] for k, vals in fields.items()}
        else:
            width = max(lengths) if pad != "max_length" else max(limit, max(lengths))
            fill = {"input_ids": self.pad_token_id, "token_type_ids": 0, "attention_mask": 0, "word_ids": -1}
            out = {}
            for key, vals in fields.items():
                shape = (len(rows), width, 2) if key == "offset_mapping" else (len(rows), width)
                arr = np.full(shape, fill.get(key, 0), np.int64)
                for i, v in enumerate(vals):
                    if len(v):
                        arr[i, :len(v)] = v
                out[key] = arr
        if return_overflowing_tokens:
            out["overflow_to_sample_mapping"] = np.asarray(sample, np.int64)
        return out

    def word_ids(self, text, text_pair=None, **kwargs) -> list[list[int | None]]:
        """Per row, the index of the word each token comes from (None for special tokens)."""
        texts = _check_text("text", text)
        pairs = _check_text("text_pair", text_pair, allow_none=True)
        inputs = texts if pairs is None else list(zip(texts, pairs))
        return [enc.word_ids for enc in self._tok.encode_batch(inputs)]
