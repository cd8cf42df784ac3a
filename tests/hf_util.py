"""Hugging Face transformers helpers for the tests: configs, random models, forward passes.

torch and transformers are imported inside the functions, so importing this
module costs nothing; the test extra installs them (a missing one fails the tests: the
Hugging Face comparisons must run, never skip).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mbengine.config import MobileBertConfig


def hf_config(cfg: MobileBertConfig):
    """The transformers.MobileBertConfig with the same fields (eager attention)."""
    import transformers

    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "extra"}
    labels = {k: cfg.extra[k] for k in ("id2label", "label2id", "num_labels", "problem_type") if k in cfg.extra}
    if "id2label" in labels:
        labels["id2label"] = {int(k): v for k, v in labels["id2label"].items()}
    return transformers.MobileBertConfig(**fields, **labels, attn_implementation="eager")


def random_hf_model(cfg: MobileBertConfig, seed: int):
    """A float32 transformers.MobileBertModel in eval mode with every parameter random.

    Unlike HF's own init, norm weights are not all ones and biases not zero, so
    a mix-up between tensors (or a missing bias or norm) shows in the outputs.
    Linear weights are scaled by 1/sqrt(fan_in) to keep activations O(1).
    """
    import torch
    import transformers

    torch.manual_seed(seed)
    model = transformers.MobileBertModel(hf_config(cfg)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("LayerNorm.weight"):
                param.uniform_(0.5, 1.5)
            elif name.endswith("bias"):
                param.normal_(0.0, 0.1)
            elif "embeddings" in name and param.dim() == 2 and "transformation" not in name:
                param.normal_(0.0, 0.5)  # embedding tables
            else:
                param.normal_(0.0, 1.0 / np.sqrt(param.shape[1]))
    return model.float()


def save_hf(model, directory) -> None:
    """Write an HF checkpoint directory (config.json + model.safetensors)."""
    model.save_pretrained(directory)


def _numpy(t) -> np.ndarray:
    return t.detach().double().cpu().numpy()


def hf_forward(
    model,
    input_ids,
    attention_mask=None,
    token_type_ids=None,
    position_ids=None,
    output_hidden_states=False,
    output_attentions=False,
) -> dict:
    """Run the model on numpy inputs; float64 numpy outputs under reference_forward's keys.

    ``hidden_states`` and ``attentions`` are lists when asked for, else None.
    """
    import torch

    def tensor(a):
        return None if a is None else torch.as_tensor(np.asarray(a, np.int64))

    with torch.no_grad():
        out = model(
            input_ids=tensor(input_ids),
            attention_mask=tensor(attention_mask),
            token_type_ids=tensor(token_type_ids),
            position_ids=tensor(position_ids),
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
    return {
        "last_hidden_state": _numpy(out.last_hidden_state),
        "pooler_output": _numpy(out.pooler_output),
        "hidden_states": [_numpy(h) for h in out.hidden_states] if output_hidden_states else None,
        "attentions": [_numpy(a) for a in out.attentions] if output_attentions else None,
    }


def state_dict_numpy(model) -> dict[str, np.ndarray]:
    """The model's weights as float64 numpy, HF names without the ``mobilebert.`` prefix.

    For a model with a head, the head's tensors (``cls.*``, ``classifier.*``) come too.
    """
    out = {}
    for name, t in model.state_dict().items():
        name = name.removeprefix("mobilebert.")
        if name == "embeddings.position_ids":
            continue
        out[name] = _numpy(t)
    return out


# class name -> (output fields, extra config)
HEADS = {
    "MobileBertForPreTraining": (["prediction_logits", "seq_relationship_logits"], {}),
    "MobileBertForMaskedLM": (["logits"], {}),
    "MobileBertForNextSentencePrediction": (["logits"], {}),
    "MobileBertForSequenceClassification": (["logits"], {"num_labels": 3}),
    "MobileBertForTokenClassification": (["logits"], {"num_labels": 5}),
    "MobileBertForQuestionAnswering": (["start_logits", "end_logits"], {}),
    "MobileBertForMultipleChoice": (["logits"], {}),
}


def random_head_model(cls_name, config, seed):
    """An HF head model: the randomised base of random_hf_model plus random head weights."""
    import torch
    import transformers

    base = random_hf_model(config, seed)
    hf = getattr(transformers, cls_name)(hf_config(config)).eval()
    with torch.no_grad():
        hf.base_model.load_state_dict(base.state_dict(), strict=False)
        gen = torch.Generator().manual_seed(seed + 1)
        for name, p in hf.named_parameters():
            if name.startswith("mobilebert.") or "word_embeddings" in name:
                continue
            if name.endswith("LayerNorm.weight"):
                p.copy_(0.5 + torch.rand(p.shape, generator=gen))
            elif p.ndim == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / np.sqrt(p.shape[-1]))
    return hf
