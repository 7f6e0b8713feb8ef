"""Task heads over the encoder: the paper's fine-tuning heads and the feature-based route.

- ``SequenceClassifier``: single sentences and sentence pairs. ``[CLS]`` → BERT's tanh
  pooler → dropout → linear → softmax (one output and MSE when the labels are floats).
  ``pooling="mean"``/``"max"`` instead pool the final states of the real (non-padding)
  tokens, the alternatives to the seed's argument that a meaningless ``[CLS]`` fuses the
  sentence most fairly (``sweep/pooling``).
- ``SpanExtractor``: extractive QA. A start vector S and an end vector E (one ``Linear(H, 2)``)
  dotted with every token's final state; softmax over positions.
- ``TokenTagger``: tagging. A linear layer on every token's final state; the label sits on
  the first WordPiece of each word (the others get -100 and are ignored by the loss).
- Feature-based: ``FrozenFeatures`` runs the encoder without gradients and combines layers
  (``embeddings``, ``last``, ``second_to_last``, ``sum_last4`` (learned softmax weights),
  ``concat_last4``, ``sum_all``); ``BiLSTMTagger`` (2 layers, as in the paper's Table 7) and
  ``MLPClassifier`` sit on top. Fine-tuning updates every weight; here only the head learns,
  which is why it is cheaper and, as the paper shows, somewhat worse.

Parameter names keep HF's layout for the encoder (``bert.*``) so imported weights load
directly; head names follow HF's task models (``classifier``, ``qa_outputs``).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bertpipe.model.bert import BertConfig, BertModel
from bertpipe.tasks.config import Features, Pooling

__all__ = ["Features", "Pooling", "SpanLogits", "pool", "SequenceClassifier", "SpanExtractor", "TokenTagger",
           "FrozenFeatures", "BiLSTMTagger", "MLPClassifier", "load_encoder"]


class SpanLogits(NamedTuple):
    """Extractive QA's outputs: a start and an end score per position (padding at -1e4)."""

    start: Tensor  # (B, T)
    end: Tensor  # (B, T)


def pool(h: Tensor, attention_mask: Tensor, pooling: Pooling | Literal["last"]) -> Tensor:
    """One vector per sequence from per-token states (B, T, H): [CLS], the last real token, or the
    mean / max over real tokens."""
    if pooling == "cls":
        return h[:, 0]  # (B, H)
    if pooling == "last":
        last = attention_mask.sum(1).clamp(min=1) - 1  # (B,)
        return h[torch.arange(len(h), device=h.device), last]  # (B, H)
    keep = attention_mask.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
    if pooling == "mean":
        return (h * keep).sum(1) / keep.sum(1).clamp(min=1)  # (B, H)
    return h.masked_fill(keep == 0, torch.finfo(h.dtype).min).amax(1)  # (B, H)


class SequenceClassifier(nn.Module):
    def __init__(self, cfg: BertConfig, num_labels: int, dropout: float | None = None, pooling: Pooling = "cls"):
        super().__init__()
        self.bert, self.pooling = BertModel(cfg), pooling
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob if dropout is None else dropout)
        self.classifier = nn.Linear(cfg.hidden_size, num_labels)
        nn.init.normal_(self.classifier.weight, std=cfg.initializer_range)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor, attention_mask: Tensor) -> Tensor:
        out = self.bert(input_ids, token_type_ids, attention_mask)
        # cls: BERT's pretrained tanh pooler over [CLS]; mean/max: over the real tokens' final states.
        # A left-to-right encoder's [CLS] sees only itself, so there "cls" means the pooler over
        # the last real token, the one that has read the whole input (as GPT classifies).
        if self.pooling == "cls" and self.bert.config.causal:
            last = pool(out.last_hidden_state, attention_mask, "last")  # (B, H)
            pooled = torch.tanh(self.bert.pooler.dense(last))  # (B, H)
        elif self.pooling == "cls":
            pooled = out.pooled_output  # (B, H)
        else:
            pooled = pool(out.last_hidden_state, attention_mask, self.pooling)  # (B, H)
        return self.classifier(self.dropout(pooled))  # (B, num_labels)


class SpanExtractor(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.bert = BertModel(cfg)
        self.qa_outputs = nn.Linear(cfg.hidden_size, 2)  # rows: the start vector S and end vector E
        nn.init.normal_(self.qa_outputs.weight, std=cfg.initializer_range)
        nn.init.zeros_(self.qa_outputs.bias)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor, attention_mask: Tensor) -> SpanLogits:
        h = self.bert(input_ids, token_type_ids, attention_mask).last_hidden_state  # (B, T, H)
        start, end = self.qa_outputs(h).unbind(-1)  # (B, T) each
        pad = attention_mask == 0
        return SpanLogits(start=start.masked_fill(pad, -1e4), end=end.masked_fill(pad, -1e4))


class TokenTagger(nn.Module):
    def __init__(self, cfg: BertConfig, num_labels: int):
        super().__init__()
        self.bert = BertModel(cfg)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)
        self.classifier = nn.Linear(cfg.hidden_size, num_labels)
        nn.init.normal_(self.classifier.weight, std=cfg.initializer_range)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor, attention_mask: Tensor) -> Tensor:
        h = self.bert(input_ids, token_type_ids, attention_mask).last_hidden_state  # (B, T, H)
        return self.classifier(self.dropout(h))  # (B, T, num_labels)


class FrozenFeatures(nn.Module):
    """The frozen encoder's hidden states combined into one feature per token."""

    def __init__(self, cfg: BertConfig, features: Features):
        super().__init__()
        self.bert = BertModel(cfg)
        self.bert.requires_grad_(False)
        self.features = features
        self.last = min(4, cfg.num_hidden_layers + 1)  # "last four" on encoders with fewer layers
        n = {"sum_last4": self.last, "sum_all": cfg.num_hidden_layers + 1}.get(features)
        self.mix = nn.Parameter(torch.zeros(n)) if n else None  # softmax-normalized layer weights
        self.out_dim = cfg.hidden_size * (self.last if features == "concat_last4" else 1)

    def train(self, mode: bool = True) -> FrozenFeatures:
        super().train(mode)
        self.bert.eval()  # frozen: no dropout either
        return self

    def forward(self, input_ids: Tensor, token_type_ids: Tensor, attention_mask: Tensor) -> Tensor:
        with torch.no_grad():
            hs = self.bert(input_ids, token_type_ids, attention_mask, output_hidden_states=True).hidden_states
        if self.features == "embeddings":
            return hs[0]  # (B, T, H)
        if self.features == "last":
            return hs[-1]
        if self.features == "second_to_last":
            return hs[-2]
        if self.features == "concat_last4":
            return torch.cat(hs[-self.last :], dim=-1)  # (B, T, 4H)
        layers = torch.stack(hs[-self.last :] if self.features == "sum_last4" else hs)  # (n, B, T, H)
        return (F.softmax(self.mix, 0)[:, None, None, None] * layers).sum(0)  # (B, T, H)


class BiLSTMTagger(nn.Module):
    """Feature-based tagging as in the paper's Table 7: a 2-layer BiLSTM on frozen features."""

    def __init__(self, cfg: BertConfig, num_labels: int, features: Features, hidden: int = 256):
        super().__init__()
        self.encoder = FrozenFeatures(cfg, features)
        self.lstm = nn.LSTM(self.encoder.out_dim, hidden, num_layers=2, bidirectional=True, batch_first=True)
        self.classifier = nn.Linear(2 * hidden, num_labels)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor, attention_mask: Tensor) -> Tensor:
        x = self.encoder(input_ids, token_type_ids, attention_mask)  # (B, T, F)
        lengths = attention_mask.sum(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])  # (B, T, 2h)
        return self.classifier(out)  # (B, T, num_labels)


class MLPClassifier(nn.Module):
    """Feature-based classification: the pooled feature ([CLS], mean or max) into a one-hidden-layer MLP."""

    def __init__(self, cfg: BertConfig, num_labels: int, features: Features, hidden: int = 256, pooling: Pooling = "cls"):
        super().__init__()
        self.encoder, self.pooling = FrozenFeatures(cfg, features), pooling
        self.mlp = nn.Sequential(nn.Linear(self.encoder.out_dim, hidden), nn.GELU(), nn.Dropout(0.1), nn.Linear(hidden, num_labels))

    def forward(self, input_ids: Tensor, token_type_ids: Tensor, attention_mask: Tensor) -> Tensor:
        x = self.encoder(input_ids, token_type_ids, attention_mask)  # (B, T, F)
        causal_cls = self.pooling == "cls" and self.encoder.bert.config.causal  # see SequenceClassifier
        return self.mlp(pool(x, attention_mask, "last" if causal_cls else self.pooling))  # (B, num_labels)


def load_encoder(model: nn.Module, encoder_state: dict[str, Tensor]) -> None:
    """Copy pretrained ``bert.*`` weights (from a bertpipe checkpoint) into a task model."""
    target = model.encoder.bert if hasattr(model, "encoder") else model.bert
    state = {k.removeprefix("bert."): v for k, v in encoder_state.items() if k.startswith("bert.")}
    missing, unexpected = target.load_state_dict(state, strict=False)
    if missing:
        raise ValueError(f"checkpoint lacks encoder weights: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
