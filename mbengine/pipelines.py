"""Task pipelines: text in, answers out, with the behaviour of Hugging Face's pipelines.

    import mbengine
    fill = mbengine.pipeline("fill-mask", model="path/to/checkpoint")
    fill("The capital of France is [MASK].", top_k=3)

Tasks: fill-mask, text-classification, token-classification,
question-answering, multiple-choice, next-sentence, feature-extraction. A
checkpoint directory holds the model (HF or engine format) and its tokenizer
files. Inputs are tokenized, sorted by length, run in padded batches of
``batch_size`` and returned in input order; padding never changes a result
(the models' default ``trigram_padding="mask"``).
"""

from __future__ import annotations

import os

import numpy as np

from .tokenizer import MobileBertTokenizer


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _texts(name, value):
    """(list of str, was a single str)."""
    if isinstance(value, str):
        return [value], True
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return list(value), False
    if isinstance(value, (list, tuple)) and not value:
        raise ValueError(f"{name} is an empty list; give at least one text")
    raise TypeError(f"{name} must be a str or a non-empty list of str, got {type(value).__name__}")


class Pipeline:
    """Shared machinery: a model, its tokenizer, and length-sorted padded batches."""

    model_class = None

    def __init__(self, model, tokenizer: MobileBertTokenizer, batch_size: int = 8):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = min(model.config.max_position_embeddings, tokenizer.model_max_length)

    def _run(self, encodings: list[dict], call):
        """Run ``call(ids, mask, types)`` over encodings (each a dict of 1-D arrays) in length-sorted
        padded batches; return the per-encoding results (``call`` returns a list per batch row)."""
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i]["input_ids"]))
        results = [None] * len(encodings)
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            width = max(len(encodings[i]["input_ids"]) for i in chunk)
            ids = np.full((len(chunk), width), pad, np.int64)
            mask = np.zeros((len(chunk), width), np.int64)
            types = np.zeros((len(chunk), width), np.int64)
            for row, i in enumerate(chunk):
                n = len(encodings[i]["input_ids"])
                ids[row, :n] = encodings[i]["input_ids"]
                mask[row, :n] = 1
                types[row, :n] = encodings[i]["token_type_ids"]
            for row, value in zip(chunk, call(ids, mask, types)):
                results[row] = value
        return results

    def _encode(self, texts, pairs=None, **kw) -> list[dict]:
        """Tokenize each text (pair) into unpadded 1-D arrays, cut at the model's length."""
        enc = self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length, **kw)
        rows = len(enc["input_ids"])
        return [{k: v[i] for k, v in enc.items() if k != "overflow_to_sample_mapping"} for i in range(rows)]


# --------------------------------------------------------------------------- tasks
class FillMaskPipeline(Pipeline):
    """Predict the tokens at [MASK]: [{score, token, token_str, sequence}] (a list per mask with several)."""

    def __call__(self, inputs, top_k: int = 5, targets=None):
        texts, single = _texts("inputs", inputs)
        tok = self.tokenizer
        target_ids = None
        if targets is not None:
            targets = [targets] if isinstance(targets, str) else list(targets)
            ids = []
            for t in targets:
                i = tok._tok.token_to_id(t)
                if i is None:  # as HF: the first piece of the tokenized target
                    pieces = tok(t, add_special_tokens=False)["input_ids"][0]
                    if len(pieces) == 0:
                        continue
                    i = int(pieces[0])
                ids.append(i)
            if not ids:
                raise ValueError(f"none of the targets {targets} can be tokenized")
            target_ids = np.array(sorted(set(ids)), np.int64)
            top_k = min(top_k, len(target_ids))
        encodings = self._encode(texts)
        for text, e in zip(texts, encodings):
            if not (e["input_ids"] == tok.mask_token_id).any():
                raise ValueError(f"no {tok.mask_token} token in the input {text!r}")

        def call(ids, mask, types):
            logits = self.model(ids, attention_mask=mask, token_type_ids=types).logits
            return [logits[r] for r in range(len(ids))]

        results = []
        for e, logits in zip(encodings, self._run(encodings, call)):
            ids = e["input_ids"]
            positions = np.flatnonzero(ids == tok.mask_token_id)
            probs = _softmax(logits[positions].astype(np.float64))
            if target_ids is not None:
                probs = probs[:, target_ids]
            per_mask = []
            for m, p in zip(positions, probs):
                best = np.argsort(-p, kind="stable")[:top_k]
                row = []
                for j in best:
                    token = int(target_ids[j]) if target_ids is not None else int(j)
                    filled = ids[:len(ids)].copy()
                    filled[m] = token
                    row.append({"score": float(p[j]), "token": token, "token_str": tok.decode([token]),
                                "sequence": tok.decode(filled, skip_special_tokens=len(positions) == 1)})
                per_mask.append(row)
            results.append(per_mask[0] if len(per_mask) == 1 else per_mask)
        return results[0] if single else results


class TextClassificationPipeline(Pipeline):
    """Labels with scores; softmax, sigmoid or none chosen from problem_type and num_labels as HF does."""

    _DEFAULT = object()

    def __call__(self, inputs, top_k=_DEFAULT, function_to_apply: str | None = None, text_pair=None):
        texts, single = _texts("inputs", inputs)
        pairs = None if text_pair is None else _texts("text_pair", text_pair)[0]
        c = self.model.config
        fn = function_to_apply
        if fn is None:
            if c.problem_type == "regression":
                fn = "none"
            elif c.problem_type == "multi_label_classification" or c.num_labels == 1:
                fn = "sigmoid"
            else:
                fn = "softmax"
        if fn not in ("softmax", "sigmoid", "none"):
            raise ValueError(f"function_to_apply must be 'softmax', 'sigmoid' or 'none', got {fn!r}")
        encodings = self._encode(texts, pairs)

        def call(ids, mask, types):
            logits = self.model(ids, attention_mask=mask, token_type_ids=types).logits.astype(np.float64)
            return list(logits)

        out = []
        for logits in self._run(encodings, call):
            scores = _softmax(logits) if fn == "softmax" else _sigmoid(logits) if fn == "sigmoid" else logits
            if top_k is self._DEFAULT:
                out.append({"label": c.id2label[int(scores.argmax())], "score": float(scores.max())})
            else:
                ranked = sorted(({"label": c.id2label[i], "score": float(s)} for i, s in enumerate(scores)),
                                key=lambda d: d["score"], reverse=True)
                out.append(ranked if top_k is None else ranked[:top_k])
        if single:
            return [out[0]] if top_k is self._DEFAULT else out[0]
        return out


class TokenClassificationPipeline(Pipeline):
    """Entities per token or grouped (aggregation_strategy none/simple/first/average/max) with character spans."""

    STRATEGIES = ("none", "simple", "first", "average", "max")

    def __call__(self, inputs, aggregation_strategy: str = "none", ignore_labels=("O",), stride: int | None = None):
        texts, single = _texts("inputs", inputs)
        if aggregation_strategy not in self.STRATEGIES:
            raise ValueError(f"aggregation_strategy must be one of {self.STRATEGIES}, got {aggregation_strategy!r}")
        kw = dict(return_offsets_mapping=True)
        if stride is not None:
            kw.update(return_overflowing_tokens=True, stride=stride)
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_length, **kw)
        sample = enc.get("overflow_to_sample_mapping", np.arange(len(texts)))
        rows = [{k: v[i] for k, v in enc.items() if k != "overflow_to_sample_mapping"} for i in range(len(sample))]

        def call(ids, mask, types):
            logits = self.model(ids, attention_mask=mask, token_type_ids=types).logits.astype(np.float64)
            return [logits[r] for r in range(len(ids))]

        per_text = [[] for _ in texts]
        chunks = [0] * len(texts)
        results = self._run(rows, call)
        for r, (row, logits) in enumerate(zip(rows, results)):
            t = int(sample[r])
            chunks[t] += 1
            n = len(row["input_ids"])
            entities = self._entities(texts[t], row, _softmax(logits[:n]), aggregation_strategy)
            per_text[t].extend(e for e in entities
                               if e.get("entity", e.get("entity_group")) not in set(ignore_labels or ()))
        out = [_merge_overlapping(e) if chunks[t] > 1 else e for t, e in enumerate(per_text)]
        return out[0] if single else out

    def _entities(self, text, row, scores, strategy):
        tok, id2label = self.tokenizer, self.model.config.id2label
        special = set(tok.all_special_ids)
        pre = []
        for idx, (token_id, (start, end)) in enumerate(zip(row["input_ids"], row["offset_mapping"])):
            token_id, start, end = int(token_id), int(start), int(end)
            if token_id in special and end == 0:
                continue
            word = tok.convert_ids_to_tokens(token_id)
            ref = text[start:end]
            is_subword = len(word) != len(ref)
            if token_id == tok.unk_token_id:
                word, is_subword = ref, False
            pre.append({"word": word, "scores": scores[idx], "start": start, "end": end, "index": idx,
                        "is_subword": is_subword})
        if strategy in ("none", "simple"):
            entities = [{"entity": id2label[int(p["scores"].argmax())], "score": float(p["scores"].max()),
                         "index": p["index"], "word": p["word"], "start": p["start"], "end": p["end"]} for p in pre]
        else:
            groups = []
            for p in pre:
                if groups and p["is_subword"]:
                    groups[-1].append(p)
                else:
                    groups.append([p])
            entities = [self._word(g, strategy) for g in groups]
        if strategy == "none":
            return entities
        return _group_entities(entities, tok)

    def _word(self, parts, strategy):
        id2label = self.model.config.id2label
        if strategy == "first":
            scores = parts[0]["scores"]
        elif strategy == "max":
            scores = max(parts, key=lambda p: p["scores"].max())["scores"]
        else:
            scores = np.nanmean(np.stack([p["scores"] for p in parts]), axis=0)
        best = int(scores.argmax())
        return {"entity": id2label[best], "score": float(scores[best]), "word": self.tokenizer.convert_tokens_to_string([p["word"] for p in parts]),
                "start": parts[0]["start"], "end": parts[-1]["end"]}


def _tag(label):
    if label.startswith("B-"):
        return "B", label[2:]
    if label.startswith("I-"):
        return "I", label[2:]
    return "I", label


def _group_entities(entities, tok):
    groups, current = [], []

    def close():
        groups.append({"entity_group": current[0]["entity"].split("-", 1)[-1],
                       "score": float(np.nanmean([e["score"] for e in current])),
                       "word": tok.convert_tokens_to_string([e["word"] for e in current]),
                       "start": current[0]["start"], "end": current[-1]["end"]})

    for e in entities:
        if current:
            bi, tag = _tag(e["entity"])
            _, last_tag = _tag(current[-1]["entity"])
            if tag == last_tag and bi != "B":
                current.append(e)
                continue
            close()
        current = [e]
    if current:
        close()
    return groups


def _merge_overlapping(entities):
    """Entities from overlapping windows: of overlapping ones keep the longest (then the best scored)."""
    if not entities:
        return entities
    entities = sorted(entities, key=lambda e: e["start"])
    out, prev = [], entities[0]
    for e in entities[1:]:
        if prev["start"] <= e["start"] < prev["end"]:
            if (e["end"] - e["start"], e["score"]) > (prev["end"] - prev["start"], prev["score"]):
                prev = e
        else:
            out.append(prev)
            prev = e
    out.append(prev)
    return out


class QuestionAnsweringPipeline(Pipeline):
    """Answer spans of the context: [{score, start, end, answer}] (character offsets in the context)."""

    def __call__(self, question, context, top_k: int = 1, doc_stride: int = 128, max_answer_len: int = 15,
                 max_seq_len: int = 384, max_question_len: int = 64, handle_impossible_answer: bool = False,
                 align_to_words: bool = True):
        questions, single = _texts("question", question)
        contexts, _ = _texts("context", context)
        if len(contexts) == 1 and len(questions) > 1:
            contexts = contexts * len(questions)
        if len(contexts) != len(questions):
            raise ValueError(f"{len(questions)} questions but {len(contexts)} contexts")
        for name, items in (("question", questions), ("context", contexts)):
            for i, text in enumerate(items):
                if not text.strip():
                    raise ValueError(f"{name} {i} is empty")
        if max_answer_len < 1 or top_k < 1:
            raise ValueError("max_answer_len and top_k must be at least 1")
        tok = self.tokenizer
        max_seq_len = min(max_seq_len, self.max_length)
        q_len = max(len(tok(q, add_special_tokens=False)["input_ids"][0]) for q in questions)
        doc_stride = min(doc_stride, max_seq_len - min(q_len, max_question_len) - 4)
        if doc_stride < 0:
            raise ValueError(f"the question is too long for max_seq_len={max_seq_len}")
        enc = tok(questions, contexts, truncation="only_second", max_length=max_seq_len, stride=doc_stride,
                  return_overflowing_tokens=True, return_offsets_mapping=True, return_word_ids=True)
        sample = enc["overflow_to_sample_mapping"]
        rows = [{k: v[i] for k, v in enc.items() if k != "overflow_to_sample_mapping"} for i in range(len(sample))]

        def call(ids, mask, types):
            out = self.model(ids, attention_mask=mask, token_type_ids=types)
            return [(out.start_logits[r].astype(np.float64), out.end_logits[r].astype(np.float64))
                    for r in range(len(ids))]

        spans = [[] for _ in questions]
        null = [None] * len(questions)
        for r, (row, (start_logits, end_logits)) in enumerate(zip(rows, self._run(rows, call))):
            t = int(sample[r])
            n = len(row["input_ids"])
            context_token = (row["token_type_ids"][:n] == 1) & (row["input_ids"][:n] != tok.sep_token_id)
            # probabilities over the window, non-context tokens masked (the [CLS] kept for the null answer)
            allowed = context_token.copy()
            allowed[0] = True
            s = np.where(allowed, start_logits[:n], -10000.0)
            e = np.where(allowed, end_logits[:n], -10000.0)
            ps, pe = _softmax(s), _softmax(e)
            score_null = ps[0] * pe[0]
            null[t] = score_null if null[t] is None else min(null[t], score_null)
            ps, pe = ps * context_token, pe * context_token
            outer = np.triu(np.tril(np.outer(ps, pe), max_answer_len - 1))
            # as transformers 4: more candidates per window when aligning to words (several
            # token spans can widen to one word span), and equal answer texts add their scores
            candidates = top_k * 2 + 10 if align_to_words else top_k
            for f in np.argsort(-outer, axis=None, kind="stable")[:candidates]:
                i, j = np.unravel_index(f, outer.shape)
                if outer[i, j] <= 0:
                    continue
                if align_to_words:  # widen to whole words
                    words = row["word_ids"][:n]
                    same_i = context_token & (words == words[i])
                    same_j = context_token & (words == words[j])
                    a, b = int(row["offset_mapping"][same_i, 0].min()), int(row["offset_mapping"][same_j, 1].max())
                else:
                    a, b = int(row["offset_mapping"][i][0]), int(row["offset_mapping"][j][1])
                text = contexts[t][a:b]
                known = next((x for x in spans[t] if x["answer"].lower() == text.lower()), None)
                if known is not None:
                    known["score"] += float(outer[i, j])
                else:
                    spans[t].append({"score": float(outer[i, j]), "start": a, "end": b, "answer": text})
        out = []
        for t in range(len(questions)):
            answers = spans[t]
            if handle_impossible_answer:
                answers = answers + [{"score": float(null[t]), "start": 0, "end": 0, "answer": ""}]
            answers = sorted(answers, key=lambda x: x["score"], reverse=True)[:top_k]
            out.append(answers[0] if top_k == 1 else answers)
        return out[0] if single else out


class MultipleChoicePipeline(Pipeline):
    """(prompt, [choices]) -> {"scores": softmax over choices, "best": index}."""

    def __call__(self, prompt, choices):
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        choices, _ = _texts("choices", choices)
        enc = self.tokenizer([prompt] * len(choices), choices, truncation=True, max_length=self.max_length,
                             padding=True)
        logits = self.model(enc["input_ids"][None], attention_mask=enc["attention_mask"][None],
                            token_type_ids=enc["token_type_ids"][None]).logits[0].astype(np.float64)
        scores = _softmax(logits)
        return {"scores": [float(s) for s in scores], "best": int(scores.argmax())}


class NextSentencePipeline(Pipeline):
    """(text_a, text_b) -> probability that text_b follows text_a (NSP logit 0 is "is next")."""

    def __call__(self, text_a, text_b):
        a, single = _texts("text_a", text_a)
        b, _ = _texts("text_b", text_b)
        if len(a) != len(b):
            raise ValueError(f"{len(a)} first texts but {len(b)} second texts")
        encodings = self._encode(a, b)

        def call(ids, mask, types):
            logits = self.model(ids, attention_mask=mask, token_type_ids=types).logits.astype(np.float64)
            return [float(p) for p in _softmax(logits)[:, 0]]

        out = [{"is_next": p} for p in self._run(encodings, call)]
        return out[0] if single else out


class FeatureExtractionPipeline(Pipeline):
    """Token vectors (one (seq, hidden) array per text), or pooled vectors: pooling="cls" | "mean"."""

    def __call__(self, inputs, pooling: str | None = None, normalize: bool = False):
        texts, single = _texts("inputs", inputs)
        if pooling not in (None, "cls", "mean"):
            raise ValueError(f"pooling must be None, 'cls' or 'mean', got {pooling!r}")
        encodings = self._encode(texts)

        def call(ids, mask, types):
            h = self.model(ids, attention_mask=mask, token_type_ids=types).last_hidden_state
            out = []
            for r in range(len(ids)):
                n = int(mask[r].sum())
                if pooling == "cls":
                    v = h[r, 0]
                elif pooling == "mean":
                    v = h[r, :n].astype(np.float64).mean(axis=0).astype(np.float32)
                else:
                    v = h[r, :n].copy()
                if normalize:
                    v = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
                out.append(v)
            return out

        out = self._run(encodings, call)
        if pooling is not None:
            out = np.stack(out)
            return out[0] if single else out
        return out[0] if single else out


TASKS = {
    "fill-mask": (FillMaskPipeline, "MobileBertForMaskedLM"),
    "text-classification": (TextClassificationPipeline, "MobileBertForSequenceClassification"),
    "token-classification": (TokenClassificationPipeline, "MobileBertForTokenClassification"),
    "question-answering": (QuestionAnsweringPipeline, "MobileBertForQuestionAnswering"),
    "multiple-choice": (MultipleChoicePipeline, "MobileBertForMultipleChoice"),
    "next-sentence": (NextSentencePipeline, "MobileBertForNextSentencePrediction"),
    "feature-extraction": (FeatureExtractionPipeline, "MobileBertModel"),
}


def pipeline(task: str, model, tokenizer=None, *, threads: int | None = None, batch_size: int = 8, **model_kwargs):
    """A ready pipeline for ``task`` from a checkpoint directory (or a loaded model plus ``tokenizer``)."""
    import mbengine

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    cls, model_class = TASKS[task]
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if tokenizer is None:
            tokenizer = path
        if model_class == "MobileBertModel":
            model_kwargs.setdefault("add_pooling_layer", False)
        model = getattr(mbengine, model_class).from_pretrained(path, threads=threads, **model_kwargs)
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = MobileBertTokenizer.from_pretrained(tokenizer)
    if tokenizer is None:
        raise ValueError("a loaded model needs a tokenizer (a MobileBertTokenizer or a path)")
    return cls(model, tokenizer, batch_size=batch_size)
