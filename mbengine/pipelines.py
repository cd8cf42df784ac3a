"""Task pipelines: text in, answers out, with the behaviour of Hugging Face's pipelines.

    import mbengine
    fill = mbengine.pipeline("fill-mask", model="path/to/checkpoint")
    fill("The capital of France is [MASK].", top_k=3)

Tasks: fill-mask, text-classification (alias sentiment-analysis),
token-classification (alias ner), question-answering, multiple-choice,
next-sentence, feature-extraction. A checkpoint directory holds the model (HF
or engine format) and its tokenizer files.

Inputs are tokenized, sorted by length, run in right-padded batches of at
most ``batch_size`` rows and ``batch_tokens`` real tokens (by default
:data:`BATCH_SIZE` and the task's ``auto_batch_tokens``) and returned in
input order; padding never changes a result
(the models' default ``trigram_padding="mask"``). Outputs, argument defaults
and decoding follow ``transformers`` 5 (fill-mask, text-classification,
token-classification, feature-extraction) and ``transformers`` 4.57
(question-answering, removed in 5); the differences are listed in the class
docstrings. Scores are Python floats, indices and offsets Python ints.

Bad arguments raise :class:`mbengine.InputError` (a ``ValueError``) naming the
argument; one of the wrong type raises :class:`PipelineInputError`, which is
both an ``InputError`` and a ``TypeError``.
"""

from __future__ import annotations

import os

import numpy as np

from . import hub
from .errors import InputError
from .tokenizer import MobileBertTokenizer


class PipelineInputError(InputError, TypeError):
    """A pipeline argument of the wrong type (a ValueError and a TypeError both)."""


_UNSET = object()  # "argument not given", where None means something


# Default batching. The model skips padding, so a batch costs its real tokens; wider batches save
# per-call costs (~300 kernel launches for MobileBERT) and split better over threads. Embedding 1 500
# real paragraphs (median 20 tokens, 2 threads, Zen 4): all-MiniLM-L6-v2 255.7 texts/s at 64 rows
# against 229.6 at 8, full-size MobileBERT 147.7 at 64 rows / 2048 tokens against 132.6 at 8 rows.
# The token budget bounds a call's memory when the texts are long: 2048 tokens take ~37 MiB of
# activations in the full-size base model; fill-mask's logits alone take 122 KiB per token (30 522
# floats), so its budget is 256 tokens (~31 MiB).
BATCH_SIZE = 64
BATCH_TOKENS = 2048


# --------------------------------------------------------------------------- argument checks
def _bad_type(name, value, expected):
    return PipelineInputError(f"{name} must be {expected}, got {type(value).__name__}")


def _item(name, i, single):
    return name if single else f"{name}[{i}]"


QUOTE = 60  # characters of a user's text quoted in an error


def _quote(text: str) -> str:
    """``text`` for an error message: whole if short, else its first characters and its length."""
    return repr(text) if len(text) <= QUOTE else f"{text[:QUOTE]!r}... ({len(text)} characters)"


def _texts(name, value):
    """``value`` as a list of str and whether it was a single str."""
    if isinstance(value, str):
        return [value], True
    if isinstance(value, (list, tuple)):
        if not value:
            raise InputError(f"{name} is an empty list; give at least one text")
        for i, v in enumerate(value):
            if not isinstance(v, str):
                raise _bad_type(f"{name}[{i}]", v, "a str")
        return list(value), False
    raise _bad_type(name, value, "a str or a non-empty list of str")


def _int(name, value, low=1, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise _bad_type(name, value, f"an integer >= {low}" + (" or None" if allow_none else ""))
    if value < low:
        raise InputError(f"{name} must be >= {low}, got {value}")
    return int(value)


def _batch_tokens(value, cls) -> int | None:
    """``batch_tokens``: "auto" (the task's :attr:`Pipeline.auto_batch_tokens`), an integer >= 1 or None."""
    if isinstance(value, str):
        if value == "auto":
            return cls.auto_batch_tokens
        raise _bad_type("batch_tokens", value, '"auto", an integer >= 1 or None')
    return _int("batch_tokens", value, allow_none=True)


def _bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise _bad_type(name, value, "True or False")
    return bool(value)


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _vocab_id(tok, token: str):
    """The id of ``token`` as one vocabulary entry (added tokens included), or None."""
    inner = getattr(tok, "_tok", None)
    if inner is not None:
        return inner.token_to_id(token)
    i = tok.convert_tokens_to_ids(token)
    return None if i == tok.unk_token_id and token != tok.unk_token else i


def _rows(enc) -> list[dict]:
    """A tokenizer result as one dict of 1-D arrays per row."""
    keys = [k for k in enc if k != "overflow_to_sample_mapping"]
    return [{k: np.asarray(enc[k][i]) for k in keys} for i in range(len(enc["input_ids"]))]


# --------------------------------------------------------------------------- shared machinery
class Pipeline:
    """A model, its tokenizer, and length-sorted padded batches."""

    auto_batch_tokens = BATCH_TOKENS  # what batch_tokens="auto" means for this task

    def __init__(
        self,
        model,
        tokenizer: MobileBertTokenizer,
        batch_size: int = BATCH_SIZE,
        batch_tokens: int | str | None = "auto",
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = _int("batch_size", batch_size)
        self.batch_tokens = _batch_tokens(batch_tokens, type(self))
        self.max_length = min(model.config.max_position_embeddings, tokenizer.model_max_length)

    def _truncation(self, truncation, max_length):
        """(truncation strategy or False, the length to cut at)."""
        if truncation not in (True, False, "longest_first", "only_first", "only_second", "do_not_truncate"):
            raise InputError(
                f"truncation must be True, False, 'longest_first', 'only_first' or 'only_second', got {truncation!r}"
            )
        limit = _int("max_length", max_length, allow_none=True)
        if limit is not None and limit > self.model.config.max_position_embeddings:
            raise InputError(
                f"max_length={limit} is more than the model's {self.model.config.max_position_embeddings} positions"
            )
        if truncation == "do_not_truncate":
            truncation = False
        return truncation, self.max_length if limit is None else limit

    def _encode(
        self, texts, pairs=None, *, truncation=False, max_length=None, name="inputs", single=False, **kw
    ) -> list[dict]:
        """Tokenize texts (pairs) into one dict of unpadded 1-D arrays per text.

        Without truncation a text longer than the model's positions is an error naming it."""
        truncation, limit = self._truncation(truncation, max_length)
        if truncation:
            enc = self.tokenizer(texts, pairs, truncation=truncation, max_length=limit, **kw)
        else:
            enc = self.tokenizer(texts, pairs, **kw)
        rows = _rows(enc)
        if not truncation:
            for i, row in enumerate(rows):
                n = len(row["input_ids"])
                if n > self.max_length:
                    raise InputError(
                        f"{_item(name, i, single)} is {n} tokens long, more than the {self.max_length} "
                        f"the model takes; pass truncation=True to cut it"
                    )
        return rows

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        """Row indices in length order, cut into batches: at most ``batch_size`` rows, and, with
        ``batch_tokens``, at most that many real tokens (a row longer than the budget runs alone)."""
        order = sorted(range(len(lengths)), key=lengths.__getitem__)
        batches, chunk, tokens = [], [], 0
        for i in order:
            full = len(chunk) == self.batch_size
            if chunk and (full or (self.batch_tokens is not None and tokens + lengths[i] > self.batch_tokens)):
                batches.append(chunk)
                chunk, tokens = [], 0
            chunk.append(i)
            tokens += lengths[i]
        if chunk:
            batches.append(chunk)
        return batches

    def _run(self, rows: list[dict], call) -> list:
        """``call(ids, mask, types)`` over the rows in length-sorted, right-padded batches (the model
        skips the padding); each batch's list of per-row results is put back in input order."""
        results = [None] * len(rows)
        pad = self.tokenizer.pad_token_id
        for chunk in self._batches([len(row["input_ids"]) for row in rows]):
            width = max(len(rows[i]["input_ids"]) for i in chunk)
            ids = np.full((len(chunk), width), pad, np.int64)
            mask = np.zeros((len(chunk), width), np.int64)
            types = np.zeros((len(chunk), width), np.int64)
            for r, i in enumerate(chunk):
                n = len(rows[i]["input_ids"])
                ids[r, :n] = rows[i]["input_ids"]
                mask[r, :n] = 1
                types[r, :n] = rows[i]["token_type_ids"]
            for i, value in zip(chunk, call(ids, mask, types)):
                results[i] = value
        return results


# --------------------------------------------------------------------------- fill-mask
class FillMaskPipeline(Pipeline):
    """Predict the tokens at [MASK]: ``[{score, token, token_str, sequence}]`` best first.

    As ``transformers``: ``top_k`` (default 5) per mask; ``targets`` restricts the
    candidates to those words (a word that is no vocabulary entry is replaced by
    the first token it tokenizes to, one that tokenizes to nothing is dropped);
    an input with several masks gives a list per mask, each scored on its own,
    whose ``sequence`` fills only that mask and keeps the special tokens; a list
    of one input gives that input's result. ``tokenizer_kwargs`` may hold
    ``truncation`` and ``max_length``; without truncation an input longer than
    the model is an error. Unlike transformers, a list of one input gives a
    list of one result (list in, list out, for every task).
    """

    auto_batch_tokens = 256  # its logits: 30 522 per token (module's BATCH_TOKENS note)

    def __call__(self, inputs, top_k: int = 5, targets=None, tokenizer_kwargs: dict | None = None):
        texts, single = _texts("inputs", inputs)
        top_k = _int("top_k", top_k)
        if tokenizer_kwargs is None:
            tokenizer_kwargs = {}
        if not isinstance(tokenizer_kwargs, dict):
            raise _bad_type("tokenizer_kwargs", tokenizer_kwargs, "a dict")
        unknown = set(tokenizer_kwargs) - {"truncation", "max_length"}
        if unknown:
            raise InputError(f"tokenizer_kwargs may hold 'truncation' and 'max_length', not {sorted(unknown)}")
        target_ids = None if targets is None else self._target_ids(targets)
        tok = self.tokenizer
        rows = self._encode(texts, name="inputs", single=single, **tokenizer_kwargs)
        for i, row in enumerate(rows):
            if not (row["input_ids"] == tok.mask_token_id).any():
                raise InputError(f"{_item('inputs', i, single)} has no {tok.mask_token} token: {_quote(texts[i])}")

        def call(ids, mask, types):
            logits = self.model(ids, attention_mask=mask, token_type_ids=types).logits
            return [logits[r, np.flatnonzero(ids[r] == tok.mask_token_id)] for r in range(len(ids))]

        results = [self._result(row, logits, top_k, target_ids) for row, logits in zip(rows, self._run(rows, call))]
        return results[0] if single else results

    def _target_ids(self, targets) -> np.ndarray:
        tok = self.tokenizer
        if isinstance(targets, str):
            targets = [targets]
        elif not isinstance(targets, (list, tuple)):
            raise _bad_type("targets", targets, "a str or a list of str")
        if not targets:
            raise InputError("targets is an empty list; give at least one target word (or targets=None)")
        ids = []
        for i, target in enumerate(targets):
            if not isinstance(target, str):
                raise _bad_type(f"targets[{i}]", target, "a str")
            token = _vocab_id(tok, target)
            if token is None:  # not one vocabulary entry: its first token, as transformers does
                pieces = tok(target, add_special_tokens=False)["input_ids"][0]
                if len(pieces) == 0:
                    continue
                token = int(pieces[0])
            ids.append(int(token))
        ids = list(set(ids))
        if not ids:
            raise InputError(f"no target gives a token: {list(targets)!r}")
        return np.array(ids, np.int64)

    def _result(self, row, logits, top_k, target_ids):
        tok = self.tokenizer
        ids = row["input_ids"]
        positions = np.flatnonzero(ids == tok.mask_token_id)
        probs = _softmax(logits.astype(np.float64))
        if target_ids is not None:
            probs = probs[:, target_ids]
        k = min(top_k, probs.shape[1])
        single_mask = len(positions) == 1
        per_mask = []
        for position, p in zip(positions, probs):
            best = np.argsort(-p, kind="stable")[:k]
            row_out = []
            for j in best:
                token = int(target_ids[j]) if target_ids is not None else int(j)
                filled = ids.copy()
                filled[position] = token
                filled = filled[filled != tok.pad_token_id]
                row_out.append(
                    {
                        "score": float(p[j]),
                        "token": token,
                        "token_str": tok.decode([token]),
                        "sequence": tok.decode(filled, skip_special_tokens=single_mask),
                    }
                )
            per_mask.append(row_out)
        return per_mask[0] if single_mask else per_mask


# --------------------------------------------------------------------------- text-classification
_FUNCTIONS = ("softmax", "sigmoid", "none")


class TextClassificationPipeline(Pipeline):
    """Labels with scores, as ``transformers``' text-classification.

    ``function_to_apply`` defaults by the config: ``none`` for
    ``problem_type="regression"``, ``sigmoid`` for multi-label or a single
    label, else ``softmax``. Without ``top_k``: one ``{label, score}`` per input
    (a single str gives a list of one, a single dict the dict). With ``top_k``:
    a list per input of the ``top_k`` best labels (``top_k=None``: all), sorted.
    An input is a str, or ``{"text": ..., "text_pair": ...}``; ``text_pair=``
    pairs every str input. Without ``truncation`` an input longer than the model
    is an error.
    """

    def __call__(
        self,
        inputs,
        top_k=_UNSET,
        function_to_apply: str | None = None,
        text_pair=None,
        truncation=False,
        max_length: int | None = None,
    ):
        legacy = top_k is _UNSET
        if not legacy:
            top_k = _int("top_k", top_k, allow_none=True)
        texts, pairs, kind = self._inputs(inputs, text_pair)
        fn = self._function(function_to_apply)
        single = kind != "list"
        rows = [None] * len(texts)
        for with_pair in (False, True):
            index = [i for i, p in enumerate(pairs) if (p is not None) == with_pair]
            if index:
                part = self._encode(
                    [texts[i] for i in index],
                    [pairs[i] for i in index] if with_pair else None,
                    truncation=truncation,
                    max_length=max_length,
                    name="inputs",
                    single=single,
                )
                for i, row in zip(index, part):
                    rows[i] = row

        def call(ids, mask, types):
            return list(self.model(ids, attention_mask=mask, token_type_ids=types).logits.astype(np.float64))

        id2label = self.model.config.id2label
        out = []
        for logits in self._run(rows, call):
            scores = _softmax(logits) if fn == "softmax" else _sigmoid(logits) if fn == "sigmoid" else logits
            if legacy:
                best = int(scores.argmax())
                out.append({"label": id2label[best], "score": float(scores[best])})
            else:
                ranked = sorted(
                    ({"label": id2label[i], "score": float(s)} for i, s in enumerate(scores)),
                    key=lambda d: d["score"],
                    reverse=True,
                )
                out.append(ranked if top_k is None else ranked[:top_k])
        if kind == "str":
            return [out[0]] if legacy else out[0]
        if kind == "dict":
            return out[0]
        return out

    @staticmethod
    def _inputs(inputs, text_pair):
        """(texts, pairs with None for no pair, "str" | "dict" | "list")."""
        if isinstance(inputs, (str, dict)):
            items, kind = [inputs], "str" if isinstance(inputs, str) else "dict"
        elif isinstance(inputs, (list, tuple)):
            if not inputs:
                raise InputError("inputs is an empty list; give at least one text")
            items, kind = list(inputs), "list"
        else:
            raise _bad_type("inputs", inputs, "a str, a {'text', 'text_pair'} dict or a list of them")
        if text_pair is not None:
            if isinstance(text_pair, str):
                text_pair = [text_pair] * len(items)
            elif not isinstance(text_pair, (list, tuple)) or len(text_pair) != len(items):
                raise InputError(f"text_pair must be a str or a list of {len(items)} str (one per input)")
        texts, pairs = [], []
        for i, item in enumerate(items):
            name = _item("inputs", i, kind != "list")
            if isinstance(item, dict):
                extra = set(item) - {"text", "text_pair"}
                if "text" not in item or extra:
                    raise InputError(
                        f"{name} must be a dict with the keys 'text' and (optionally) 'text_pair', "
                        f"got the keys {sorted(item)}"
                    )
                text, pair = item["text"], item.get("text_pair")
                if pair is not None and text_pair is not None:
                    raise InputError(f"{name} has a text_pair and text_pair= is given too")
            elif isinstance(item, str):
                text, pair = item, None
            else:
                raise _bad_type(name, item, "a str or a {'text', 'text_pair'} dict")
            if pair is None and text_pair is not None:
                pair = text_pair[i]
            if not isinstance(text, str):
                raise _bad_type(f"{name}['text']", text, "a str")
            if pair is not None and not isinstance(pair, str):
                raise _bad_type(f"text_pair of {name}", pair, "a str")
            texts.append(text)
            pairs.append(pair)
        return texts, pairs, kind

    def _function(self, function_to_apply):
        if function_to_apply is None:
            c = self.model.config
            if c.problem_type == "regression":
                return "none"
            if c.problem_type == "multi_label_classification" or c.num_labels == 1:
                return "sigmoid"
            return "softmax"
        if not isinstance(function_to_apply, str) or function_to_apply.lower() not in _FUNCTIONS:
            raise InputError(f"function_to_apply must be 'softmax', 'sigmoid' or 'none', got {function_to_apply!r}")
        return function_to_apply.lower()


# --------------------------------------------------------------------------- token-classification
class TokenClassificationPipeline(Pipeline):
    """Entities per token, or grouped, with ``transformers``' algorithm.

    ``aggregation_strategy``: ``none`` (one entry per token: entity, score,
    index, word, start, end), ``simple`` (adjacent tokens grouped by B-/I- tag
    into entity_group, score = mean), ``first`` / ``average`` / ``max`` (first
    the sub-word tokens of a word, found from the offsets, agree on the
    word's first token's, mean or most confident scores). ``ignore_labels``
    (default ``["O"]``) are dropped. ``start``/``end`` are character offsets in
    the input; ``word`` is the decoded tokens as in ``transformers`` (the
    original text only for [UNK] tokens; slice the input with start/end for
    the exact text). Inputs longer than the model are cut, as in
    ``transformers``, unless ``stride`` is given: then they run as overlapping
    windows and overlapping entities are resolved (longest, then best scored).
    """

    STRATEGIES = ("none", "simple", "first", "average", "max")

    def __call__(
        self, inputs, aggregation_strategy: str | None = "none", ignore_labels=None, stride: int | None = None
    ):
        texts, single = _texts("inputs", inputs)
        strategy = "none" if aggregation_strategy is None else aggregation_strategy
        if not isinstance(strategy, str) or strategy.lower() not in self.STRATEGIES:
            raise InputError(f"aggregation_strategy must be one of {self.STRATEGIES}, got {aggregation_strategy!r}")
        strategy = strategy.lower()
        if ignore_labels is None:
            ignore = {"O"}
        elif isinstance(ignore_labels, str):
            ignore = {ignore_labels}
        elif isinstance(ignore_labels, (list, tuple, set, frozenset)):
            ignore = set(ignore_labels)
        else:
            raise _bad_type("ignore_labels", ignore_labels, "a list of labels")
        kw = dict(return_offsets_mapping=True, return_word_ids=True)
        if stride is not None:
            stride = _int("stride", stride, low=0)
            if strategy == "none":
                raise InputError('stride needs an aggregation_strategy other than "none" (the windows overlap)')
            if stride >= self.max_length - 2:
                raise InputError(
                    f"stride must be less than {self.max_length - 2} (the model's {self.max_length} "
                    f"positions minus [CLS] and [SEP]), got {stride}"
                )
            kw.update(return_overflowing_tokens=True, stride=stride)
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_length, **kw)
        sample = enc.get("overflow_to_sample_mapping", np.arange(len(texts)))
        rows = _rows(enc)

        def call(ids, mask, types):
            logits = self.model(ids, attention_mask=mask, token_type_ids=types).logits.astype(np.float64)
            return [logits[r] for r in range(len(ids))]

        per_text = [[] for _ in texts]
        chunks = [0] * len(texts)
        for r, (row, logits) in enumerate(zip(rows, self._run(rows, call))):
            t = int(sample[r])
            chunks[t] += 1
            n = len(row["input_ids"])
            entities = self._aggregate(self._pre_entities(texts[t], row, _softmax(logits[:n])), strategy)
            per_text[t].extend(
                e for e in entities if e.get("entity") not in ignore and e.get("entity_group") not in ignore
            )
        out = [_resolve_overlaps(e) if chunks[t] > 1 else e for t, e in enumerate(per_text)]
        return out[0] if single else out

    def _pre_entities(self, text, row, scores):
        tok = self.tokenizer
        pre = []
        for idx in range(len(row["input_ids"])):
            if row["word_ids"][idx] == -1:  # [CLS], [SEP]: what the template added (transformers' special_tokens_mask)
                continue
            token_id = int(row["input_ids"][idx])
            start, end = int(row["offset_mapping"][idx][0]), int(row["offset_mapping"][idx][1])
            word = tok.convert_ids_to_tokens(token_id)
            ref = text[start:end]
            is_subword = len(word) != len(ref)
            if token_id == tok.unk_token_id:
                word, is_subword = ref, False
            pre.append(
                {
                    "word": word,
                    "scores": scores[idx],
                    "start": start,
                    "end": end,
                    "index": idx,
                    "is_subword": is_subword,
                }
            )
        return pre

    def _aggregate(self, pre, strategy):
        id2label = self.model.config.id2label
        if strategy in ("none", "simple"):
            entities = []
            for p in pre:
                best = int(p["scores"].argmax())
                entities.append(
                    {
                        "entity": id2label[best],
                        "score": float(p["scores"][best]),
                        "index": p["index"],
                        "word": p["word"],
                        "start": p["start"],
                        "end": p["end"],
                    }
                )
            if strategy == "none":
                return entities
        else:
            words, group = [], []
            for p in pre:
                if group and not p["is_subword"]:
                    words.append(self._word(group, strategy))
                    group = []
                group.append(p)
            if group:
                words.append(self._word(group, strategy))
            entities = words
        return self._group(entities)

    def _word(self, parts, strategy):
        if strategy == "first":
            scores = parts[0]["scores"]
        elif strategy == "max":
            scores = max(parts, key=lambda p: p["scores"].max())["scores"]
        else:
            scores = np.nanmean(np.stack([p["scores"] for p in parts]), axis=0)
        best = int(scores.argmax())
        return {
            "entity": self.model.config.id2label[best],
            "score": float(scores[best]),
            "word": self.tokenizer.convert_tokens_to_string([p["word"] for p in parts]),
            "start": parts[0]["start"],
            "end": parts[-1]["end"],
        }

    def _group(self, entities):
        groups, current = [], []
        for e in entities:
            if current:
                bi, tag = _tag(e["entity"])
                _, last_tag = _tag(current[-1]["entity"])
                if not (tag == last_tag and bi != "B"):
                    groups.append(self._close(current))
                    current = []
            current.append(e)
        if current:
            groups.append(self._close(current))
        return groups

    def _close(self, parts):
        return {
            "entity_group": parts[0]["entity"].split("-", 1)[-1],
            "score": float(np.nanmean([p["score"] for p in parts])),
            "word": self.tokenizer.convert_tokens_to_string([p["word"] for p in parts]),
            "start": parts[0]["start"],
            "end": parts[-1]["end"],
        }


def _tag(label):
    """(B or I, tag); a label without a B-/I- prefix continues like I-."""
    if label.startswith("B-"):
        return "B", label[2:]
    if label.startswith("I-"):
        return "I", label[2:]
    return "I", label


def _resolve_overlaps(entities):
    """Entities from overlapping windows, by start: of overlapping ones keep the longest, then the best scored."""
    if not entities:
        return entities
    entities = sorted(entities, key=lambda e: e["start"])
    out, prev = [], entities[0]
    for e in entities:  # (the first compares with itself and is kept, as in transformers)
        if prev["start"] <= e["start"] < prev["end"]:
            length, prev_length = e["end"] - e["start"], prev["end"] - prev["start"]
            if length > prev_length or length == prev_length and e["score"] > prev["score"]:
                prev = e
        else:
            out.append(prev)
            prev = e
    out.append(prev)
    return out


# --------------------------------------------------------------------------- question-answering
class QuestionAnsweringPipeline(Pipeline):
    """Answer spans of the context: ``{score, start, end, answer}`` (character offsets in the context).

    ``transformers`` 4.57's extractive QA (the pipeline was removed in 5), step
    for step: the context is cut into windows of ``max_seq_len`` tokens
    (default min(384, the tokenizer's limit)) overlapping by ``doc_stride``
    (default min(max_seq_len // 2, 128)); in each window every token that is
    not context (nor [CLS]) gets logit -10000, start and end logits are
    softmaxed, [CLS]'s start x end probability is the null score, spans are
    the outer product of start and end probabilities limited to
    ``max_answer_len`` tokens, the ``2 * top_k + 10`` best are widened to whole
    words (``align_to_words``), answers with the same text (ignoring case) add
    their scores, and with ``handle_impossible_answer`` the null answer
    ``{"start": 0, "end": 0, "answer": ""}`` scored by the smallest null score
    over the windows competes. ``top_k`` best are returned: a dict when there is
    one, else a list. Several questions (a list, with one context or a list of
    them, or ``{"question", "context"}`` dicts) give a list of results; a list
    of one gives a list of one result (transformers unwraps it; here a list
    in gives a list out, for every task).

    ``max_question_len`` (default 64): transformers' fast path ignores it and
    fails when a question leaves no room for the context; here such a question
    is cut to ``max_question_len`` tokens (as transformers' slow path does), and
    only if it then still does not fit is it an error.
    """

    def __call__(
        self,
        question=None,
        context=None,
        *,
        top_k: int = 1,
        doc_stride: int | None = None,
        max_answer_len: int = 15,
        max_seq_len: int | None = None,
        max_question_len: int = 64,
        handle_impossible_answer: bool = False,
        align_to_words: bool = True,
    ):
        examples, single = self._examples(question, context)
        top_k = _int("top_k", top_k)
        max_answer_len = _int("max_answer_len", max_answer_len)
        max_question_len = _int("max_question_len", max_question_len)
        handle_impossible_answer = _bool("handle_impossible_answer", handle_impossible_answer)
        align_to_words = _bool("align_to_words", align_to_words)
        tok = self.tokenizer
        limit = self.model.config.max_position_embeddings
        if max_seq_len is None:
            max_seq_len = min(tok.model_max_length, 384, limit)
        else:
            max_seq_len = _int("max_seq_len", max_seq_len, low=4)
            if max_seq_len > limit:
                raise InputError(f"max_seq_len={max_seq_len} is more than the model's {limit} positions")
        doc_stride = min(max_seq_len // 2, 128) if doc_stride is None else _int("doc_stride", doc_stride, low=0)
        if doc_stride > max_seq_len:
            raise InputError(f"doc_stride ({doc_stride}) is larger than max_seq_len ({max_seq_len})")

        rows, owner = [], []
        for k, (q, c) in enumerate(examples):
            q = self._fit_question(k, single, q, c, max_seq_len, doc_stride, max_question_len)
            enc = tok(
                q,
                c,
                truncation="only_second",
                max_length=max_seq_len,
                stride=doc_stride,
                return_overflowing_tokens=True,
                return_offsets_mapping=True,
                return_word_ids=True,
            )
            for row in _rows(enc):
                rows.append(row)
                owner.append(k)

        def call(ids, mask, types):
            out = self.model(ids, attention_mask=mask, token_type_ids=types)
            n = mask.sum(axis=1)
            return [
                (out.start_logits[r, : n[r]].astype(np.float32), out.end_logits[r, : n[r]].astype(np.float32))
                for r in range(len(ids))
            ]

        logits = self._run(rows, call)
        pre_topk = top_k * 2 + 10 if align_to_words else top_k
        results = []
        for k, (_, c) in enumerate(examples):
            answers, min_null = [], 1000000.0
            for row, (start, end) in ((rows[r], logits[r]) for r in range(len(rows)) if owner[r] == k):
                desired = self._desired(row)
                starts, ends, scores, min_null = _select_spans(
                    start, end, desired, min_null, pre_topk, handle_impossible_answer, max_answer_len
                )
                for s, e, score in zip(starts, ends, scores):
                    a, b = _char_span(row, int(s), int(e), align_to_words)
                    text = c[a:b]
                    same = next((x for x in answers if x["answer"].lower() == text.lower()), None)
                    if same is not None:
                        same["score"] += score.item()
                    else:
                        answers.append({"score": score.item(), "start": a, "end": b, "answer": text})
            if handle_impossible_answer:
                answers.append({"score": min_null, "start": 0, "end": 0, "answer": ""})
            answers = sorted(answers, key=lambda x: x["score"], reverse=True)[:top_k]
            results.append(answers[0] if len(answers) == 1 else answers)
        return results[0] if single else results

    def _desired(self, row):
        """Tokens that may be in an answer: the context's (sequence 1, no special token) and any [CLS]."""
        context = (row["token_type_ids"] == 1) & (row["word_ids"] != -1)
        return context | (row["input_ids"] == self.tokenizer.cls_token_id)

    @staticmethod
    def _examples(question, context):
        """([(question, context)], whether a single example was given), checked."""
        if context is None:
            items = question if isinstance(question, (list, tuple)) else [question]
            if question is None or not items or not all(isinstance(x, dict) for x in items):
                raise PipelineInputError(
                    "context is required (a str or a list of str), unless question is a "
                    "{'question', 'context'} dict or a list of them"
                )
            pairs = []
            for i, item in enumerate(items):
                if "question" not in item or "context" not in item:
                    raise InputError(
                        f"question[{i}] must be a dict with the keys 'question' and 'context', "
                        f"got the keys {sorted(item)}"
                    )
                pairs.append((item["question"], item["context"]))
            single = not isinstance(question, (list, tuple))
        else:
            questions, single = _texts("question", question)
            contexts, one_context = _texts("context", context)
            if one_context:
                contexts = contexts * len(questions)
            elif single:
                raise InputError(
                    f"one question but {len(contexts)} contexts; give a list of questions, one per context"
                )
            elif len(contexts) != len(questions):
                raise InputError(f"{len(questions)} questions but {len(contexts)} contexts")
            pairs = list(zip(questions, contexts))
        for i, (q, c) in enumerate(pairs):
            for name, value in (("question", q), ("context", c)):
                if not isinstance(value, str):
                    raise _bad_type(_item(name, i, single), value, "a str")
                if not value.strip():
                    raise InputError(f"{_item(name, i, single)} is empty")
        return pairs, single

    def _fit_question(self, k, single, q, c, max_seq_len, doc_stride, max_question_len):
        """The question, cut to max_question_len tokens only when it would leave no room for the context."""
        tok = self.tokenizer
        q_enc = tok(q, add_special_tokens=False, return_offsets_mapping=True)
        nq = len(q_enc["input_ids"][0])
        nc = len(tok(c, add_special_tokens=False)["input_ids"][0])
        if nc == 0:
            raise InputError(f"{_item('context', k, single)} has no tokens")

        def fits(n):
            room = max_seq_len - n - 3  # [CLS] q [SEP] c [SEP]
            return room >= 1 and (nc <= room or doc_stride < room)

        if fits(nq):
            return q
        if nq > max_question_len and fits(max_question_len):
            return q[: int(q_enc["offset_mapping"][0][max_question_len - 1][1])]
        n = min(nq, max_question_len)
        room = max_seq_len - n - 3
        if room < 1:
            raise InputError(
                f"{_item('question', k, single)} has {nq} tokens (cut to {n} at most): with "
                f"max_seq_len={max_seq_len} no context token fits beside it"
            )
        raise InputError(
            f"doc_stride={doc_stride} must be less than the {room} context tokens a window holds "
            f"(max_seq_len={max_seq_len} minus the question's {n} tokens and 3 special tokens)"
        )


def _select_spans(start, end, desired, min_null, top_k, handle_impossible, max_answer_len):
    """One window's best spans, as transformers 4.57's select_starts_ends + decode_spans.

    ``start``/``end`` are the window's float32 logits; the same NumPy calls on the
    same shapes keep transformers' order among equal scores."""
    start = np.where(~desired, np.float32(-10000.0), start)[None]
    end = np.where(~desired, np.float32(-10000.0), end)[None]
    start = np.exp(start - start.max(axis=-1, keepdims=True))
    start = start / start.sum()
    end = np.exp(end - end.max(axis=-1, keepdims=True))
    end = end / end.sum()
    if handle_impossible:
        min_null = min(min_null, (start[0, 0] * end[0, 0]).item())
    start[0, 0] = end[0, 0] = 0.0
    outer = np.matmul(np.expand_dims(start, -1), np.expand_dims(end, 1))
    candidates = np.tril(np.triu(outer), max_answer_len - 1)
    flat = candidates.flatten()
    if top_k == 1:
        order = np.array([np.argmax(flat)])
    elif len(flat) < top_k:
        order = np.argsort(-flat)
    else:
        part = np.argpartition(-flat, top_k)[0:top_k]
        order = part[np.argsort(-flat[part])]
    starts, ends = np.unravel_index(order, candidates.shape)[1:]
    # (transformers tests membership in the 2-D mask's nonzero() tuple, whose row indices, all 0,
    # let token 0 pass too: token 0 is [CLS], allowed anyway, so this is the same test)
    keep = desired[starts] & desired[ends]
    starts, ends = starts[keep], ends[keep]
    return starts, ends, candidates[0, starts, ends], min_null


def _char_span(row, s, e, align_to_words):
    """Character span of tokens s..e in the context; widened to whole words when asked (when a token has
    no word in the context, transformers falls back to the tokens' own offsets for both ends)."""
    offsets = row["offset_mapping"]
    if align_to_words:
        words, context = row["word_ids"], (row["token_type_ids"] == 1) & (row["word_ids"] != -1)
        ws, we = int(words[s]), int(words[e])
        first = np.flatnonzero(context & (words == ws)) if ws != -1 else ()
        last = np.flatnonzero(context & (words == we)) if we != -1 else ()
        if len(first) and len(last):
            return int(offsets[first[0]][0]), int(offsets[last[-1]][1])
    return int(offsets[s][0]), int(offsets[e][1])


# --------------------------------------------------------------------------- multiple-choice
class MultipleChoicePipeline(Pipeline):
    """``(prompt, [choices])`` -> ``{"scores": softmax over the choices, "best": index}``.

    A list of prompts with a list of choice lists gives a list of results.
    Each choice is encoded as the pair ``[CLS] prompt [SEP] choice [SEP]``;
    without ``truncation`` a pair longer than the model is an error.
    (transformers has no multiple-choice pipeline.)
    """

    def __call__(self, prompt, choices, truncation=False):
        prompts, single = _texts("prompt", prompt)
        if single:
            choice_lists = [_texts("choices", choices)[0]]
        else:
            if not isinstance(choices, (list, tuple)) or len(choices) != len(prompts):
                raise InputError(
                    f"with {len(prompts)} prompts, choices must be a list of {len(prompts)} lists "
                    f"of str (one list per prompt)"
                )
            choice_lists = [_texts(f"choices[{i}]", c)[0] for i, c in enumerate(choices)]
        items = []
        for i, (p, cs) in enumerate(zip(prompts, choice_lists)):
            if isinstance(cs, str):
                raise _bad_type(f"choices[{i}]", cs, "a list of str")
            items.append(self._encode([p] * len(cs), cs, truncation=truncation, name=_item("prompt", i, single)))
        results = [None] * len(items)
        # items with the same number of choices share batches; longest choice sets the width
        groups: dict[int, list[int]] = {}
        for i, rows in enumerate(items):
            groups.setdefault(len(rows), []).append(i)
        pad = self.tokenizer.pad_token_id
        for count, members in groups.items():
            # batch_size prompts a call, and batch_tokens real tokens over all their choices
            for batch in self._batches([sum(len(r["input_ids"]) for r in items[i]) for i in members]):
                chunk = [members[k] for k in batch]
                width = max(len(r["input_ids"]) for i in chunk for r in items[i])
                ids = np.full((len(chunk), count, width), pad, np.int64)
                mask = np.zeros_like(ids)
                types = np.zeros_like(ids)
                for b, i in enumerate(chunk):
                    for j, r in enumerate(items[i]):
                        n = len(r["input_ids"])
                        ids[b, j, :n], mask[b, j, :n], types[b, j, :n] = r["input_ids"], 1, r["token_type_ids"]
                logits = self.model(ids, attention_mask=mask, token_type_ids=types).logits.astype(np.float64)
                for b, i in enumerate(chunk):
                    scores = _softmax(logits[b])
                    results[i] = {"scores": [float(s) for s in scores], "best": int(scores.argmax())}
        return results[0] if single else results


# --------------------------------------------------------------------------- next-sentence
class NextSentencePipeline(Pipeline):
    """``(text_a, text_b)`` -> ``{"is_next": probability that text_b follows text_a}``.

    Softmax of the NSP logits, index 0 being "is next" (as in transformers'
    MobileBertForNextSentencePrediction). Lists of equal length give a list.
    """

    def __call__(self, text_a, text_b, truncation=False):
        a, single = _texts("text_a", text_a)
        b, single_b = _texts("text_b", text_b)
        if single != single_b or len(a) != len(b):
            raise InputError(
                f"text_a and text_b must both be a str or lists of the same length (got {len(a)} and {len(b)} texts)"
            )
        rows = self._encode(a, b, truncation=truncation, name="text_a", single=single)

        def call(ids, mask, types):
            logits = self.model(ids, attention_mask=mask, token_type_ids=types).logits.astype(np.float64)
            return [float(p) for p in _softmax(logits)[:, 0]]

        out = [{"is_next": p} for p in self._run(rows, call)]
        return out[0] if single else out


# --------------------------------------------------------------------------- feature-extraction
class FeatureExtractionPipeline(Pipeline):
    """Token vectors, or one pooled vector per text.

    ``pooling=None``: a float32 array (tokens, hidden) per text, padding
    removed, [CLS] and [SEP] included (transformers returns the same values as
    nested lists with a batch axis of 1); ``"cls"``: the first token's vector;
    ``"mean"``: the mean over the text's tokens (the attention mask). Pooled
    vectors come as one (texts, hidden) array, or (hidden,) for a single text.
    ``normalize=True`` scales each vector to unit L2 norm. Without ``truncation``
    a text longer than the model is an error.
    """

    def __call__(
        self,
        inputs,
        pooling: str | None = None,
        normalize: bool = False,
        truncation=False,
        max_length: int | None = None,
    ):
        texts, single = _texts("inputs", inputs)
        if pooling not in (None, "cls", "mean"):
            raise InputError(f"pooling must be None, 'cls' or 'mean', got {pooling!r}")
        normalize = _bool("normalize", normalize)
        rows = self._encode(texts, truncation=truncation, max_length=max_length, name="inputs", single=single)

        def call(ids, mask, types):
            h = self.model(ids, attention_mask=mask, token_type_ids=types).last_hidden_state
            out = []
            for r in range(len(ids)):
                n = int(mask[r].sum())
                if pooling == "cls":
                    v = h[r, 0].copy()
                elif pooling == "mean":
                    v = h[r, :n].astype(np.float64).mean(axis=0).astype(np.float32)
                else:
                    v = h[r, :n].copy()
                if normalize:
                    norm = np.linalg.norm(v.astype(np.float64), axis=-1, keepdims=True)
                    v = (v / np.maximum(norm, 1e-12)).astype(np.float32)
                out.append(v)
            return out

        out = self._run(rows, call)
        if pooling is not None:
            out = np.stack(out)
        return out[0] if single else out


# --------------------------------------------------------------------------- factory
TASKS = {
    "fill-mask": (FillMaskPipeline, "MobileBertForMaskedLM"),
    "text-classification": (TextClassificationPipeline, "MobileBertForSequenceClassification"),
    "token-classification": (TokenClassificationPipeline, "MobileBertForTokenClassification"),
    "question-answering": (QuestionAnsweringPipeline, "MobileBertForQuestionAnswering"),
    "multiple-choice": (MultipleChoicePipeline, "MobileBertForMultipleChoice"),
    "next-sentence": (NextSentencePipeline, "MobileBertForNextSentencePrediction"),
    "feature-extraction": (FeatureExtractionPipeline, "MobileBertModel"),
}
ALIASES = {"sentiment-analysis": "text-classification", "ner": "token-classification"}


def pipeline(
    task: str,
    model=None,
    tokenizer=None,
    threads: int | None = None,
    batch_size: int = BATCH_SIZE,
    revision: str | None = None,
    batch_tokens: int | str | None = "auto",
    **model_kwargs,
):
    """A ready pipeline for ``task``.

    ``model``: a checkpoint directory (HF or engine format; its tokenizer files
    are used unless ``tokenizer`` is given), or a loaded mbengine model of the
    task's class together with ``tokenizer`` (a MobileBertTokenizer or a path).
    A Hugging Face Hub model id works as a path, at ``revision`` (:mod:`mbengine.hub`).
    ``threads`` and other keywords go to the model's ``from_pretrained``.
    ``batch_size`` texts (windows, for question-answering) run per model call, at most;
    ``batch_tokens`` caps the real tokens of a call too (short texts then run
    in wide batches, long ones in narrow ones; a text longer than it runs alone;
    None: no cap). Defaults: :data:`BATCH_SIZE` rows; ``"auto"`` tokens, the task's
    ``auto_batch_tokens``: :data:`BATCH_TOKENS`, 256 for fill-mask (whose logits
    take 30 522 floats per token).
    """
    import mbengine

    if not isinstance(task, str):
        raise _bad_type("task", task, "a str")
    name = ALIASES.get(task, task)
    if name not in TASKS:
        raise InputError(f"unknown task {task!r}; choose one of {', '.join(TASKS)} (or {', '.join(ALIASES)})")
    cls, model_class = TASKS[name]
    batch_size = _int("batch_size", batch_size)
    batch_tokens = _batch_tokens(batch_tokens, cls)
    if model is None:
        raise InputError("model is required: a checkpoint directory (or a loaded model with its tokenizer)")
    if isinstance(model, (str, os.PathLike)):
        path = hub.local_path(model, revision)  # a Hub model id: its snapshot in the Hugging Face cache
        if not os.path.isdir(path):
            raise InputError(f"model={path!r} is not a directory (a checkpoint directory is expected)")
        if tokenizer is None:
            tokenizer = path
        if model_class == "MobileBertModel":
            model_kwargs.setdefault("add_pooling_layer", False)
        model = getattr(mbengine, model_class).from_pretrained(path, threads=threads, **model_kwargs)
    else:
        expected = getattr(mbengine, model_class)
        if not isinstance(model, expected):
            raise _bad_type("model", model, f"a checkpoint path or a {model_class} (task {name!r})")
        if threads is not None or model_kwargs:
            raise InputError("threads and model options apply when loading: give a path, or set them on the model")
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = MobileBertTokenizer.from_pretrained(tokenizer, revision=revision)
    elif tokenizer is None:
        raise InputError("a loaded model needs a tokenizer (a MobileBertTokenizer or a path)")
    elif not isinstance(tokenizer, MobileBertTokenizer):
        raise _bad_type("tokenizer", tokenizer, "a MobileBertTokenizer or a path")
    return cls(model, tokenizer, batch_size=batch_size, batch_tokens=batch_tokens)
