"""BERT in one file: config, encoder, pretraining heads and loss.

Purpose
    A plain PyTorch BERT (Devlin et al., 2018) that pretrains on a CPU in reasonable time and
    exchanges weights 1:1 with Hugging Face checkpoints (``hf.py``): module and parameter names
    copy HF's ``BertForPreTraining`` (``bert.encoder.layer.3.attention.self.query``).

Architecture (as in the paper and google-research/bert)
    embeddings: token + segment + position, LayerNorm, dropout
    encoder:    L post-LN blocks: x = LN(x + Attn(x)); x = LN(x + FFN(x)), FFN = Linear-GELU-Linear
    pooler:     tanh(Linear(h[CLS])), feeds next-sentence prediction (NSP)
    MLM head:   Linear-GELU-LN, then a decoder tied to the word embeddings plus a per-token bias

Trade-offs and choices
    * Speed (``kernels.py``, same math): attention is ``F.scaled_dot_product_attention`` with a
      boolean mask, or plain products for bf16 training on a CPU (2-3x faster there); q, k, v
      come from one product; training on a padded batch runs the per-token layers on its real
      tokens only (``Unpadded``); the MLM loss is a blockwise cross-entropy without an fp32
      copy of the (N, V) logits.
    * The MLM head runs only at the masked positions (``masked_positions``; None: every
      position, same numbers): ~15% of tokens, so the (H x V) decoder matmul shrinks ~6x.
    * The decoder is not a module: logits are ``F.linear(h, word_embeddings.weight, bias)``, so
      the tied weight exists once in the state dict and in ``num_parameters()``.
    * GELU is the exact erf form (HF ``hidden_act="gelu"``), not the tanh approximation.
    * Two ablation switches, both off by default (= BERT): ``embedding_fusion="concat"``
      concatenates the three embeddings and projects 3H -> H (is summing them enough?);
      ``causal=True`` gives a left-to-right encoder (the paper's "LTR & No NSP" ablation).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from bertpipe.model.kernels import Unpadded, attention, dropout, mlm_cross_entropy

# --------------------------------------------------------------------------------------------
# Config


class BertConfig(BaseModel):
    """Hyper-parameters of a BERT encoder. Field names match HF's ``BertConfig``."""

    model_config = ConfigDict(extra="forbid")

    vocab_size: int = Field(gt=0, description="WordPiece vocabulary size V.")
    hidden_size: int = Field(gt=0, description="Model width H.")
    num_hidden_layers: int = Field(gt=0, description="Number of transformer blocks L.")
    num_attention_heads: int = Field(gt=0, description="Attention heads A; H must divide by A.")
    intermediate_size: int = Field(gt=0, description="FFN inner width; BERT uses 4H.")
    # 512 = the longest sequence BERT was pretrained on (phase 2); positions are learned.
    max_position_embeddings: int = Field(512, gt=0, description="Longest supported sequence.")
    # 2 segments: sentence A and sentence B of the NSP pair.
    type_vocab_size: int = Field(2, gt=0, description="Number of segment (token type) ids.")
    # 0.1 dropout everywhere, as in the paper (A.2); set 0 for deterministic debugging.
    hidden_dropout_prob: float = Field(0.1, ge=0, lt=1, description="Embedding/block dropout.")
    attention_probs_dropout_prob: float = Field(0.1, ge=0, lt=1, description="Attention dropout.")
    # 1e-12 is what the TF reference used; kept so imported weights reproduce HF outputs exactly.
    layer_norm_eps: float = Field(1e-12, gt=0, description="LayerNorm epsilon.")
    initializer_range: float = Field(0.02, gt=0, description="Std of the normal init of weights.")
    embedding_fusion: Literal["sum", "concat"] = Field(
        "sum",
        description="How token, segment and position embeddings combine: 'sum' (BERT) or "
        "'concat' (concatenate, then a Linear 3H -> H; an ablation with no HF equivalent).",
    )
    causal: bool = Field(False, description="Left-to-right attention (the paper's LTR ablation).")
    # 0 = index of [PAD] in the BERT vocabularies; its embedding row starts at zero.
    pad_token_id: int = Field(0, ge=0, description="Id of the [PAD] token.")

    @model_validator(mode="after")
    def _check(self) -> BertConfig:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.pad_token_id >= self.vocab_size:
            raise ValueError(f"pad_token_id {self.pad_token_id} >= vocab_size {self.vocab_size}")
        return self

    @classmethod
    def from_preset(cls, name: str, **overrides) -> BertConfig:
        """A named size from ``PRESETS`` with any field overridden, e.g. ``vocab_size=8000``."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})


def _preset(layers: int, hidden: int, heads: int) -> dict:
    # vocab 30522 = the uncased English BERT vocabulary; FFN width 4H as in the paper.
    return dict(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers,
                num_attention_heads=heads, intermediate_size=4 * hidden)


PRESETS: dict[str, dict] = {
    "tiny": _preset(2, 128, 2),
    "mini": _preset(4, 256, 4),
    "small": _preset(4, 512, 8),
    "medium": _preset(8, 512, 8),
    "base": _preset(12, 768, 12),  # BERT-Base, 110M in the paper
    "large": _preset(24, 1024, 16),  # BERT-Large, 340M in the paper
}

# --------------------------------------------------------------------------------------------
# Encoder


class BertEmbeddings(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        H = cfg.hidden_size
        self.fusion_mode = cfg.embedding_fusion
        self.word_embeddings = nn.Embedding(cfg.vocab_size, H, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, H)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, H)
        if cfg.embedding_fusion == "concat":
            self.fusion = nn.Linear(3 * H, H)
        self.LayerNorm = nn.LayerNorm(H, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor) -> Tensor:
        T = input_ids.shape[1]
        positions = torch.arange(T, device=input_ids.device)  # (T,)
        tok = self.word_embeddings(input_ids)  # (B, T, H)
        seg = self.token_type_embeddings(token_type_ids)  # (B, T, H)
        pos = self.position_embeddings(positions).expand_as(tok)  # (B, T, H)
        if self.fusion_mode == "sum":
            x = tok + seg + pos  # (B, T, H)
        else:
            x = self.fusion(torch.cat([tok, seg, pos], dim=-1))  # (B, T, 3H) -> (B, T, H)
        return dropout(self.dropout, self.LayerNorm(x))  # (B, T, H)


class BertSelfAttention(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        H = cfg.hidden_size
        self.n_head = cfg.num_attention_heads
        self.query = nn.Linear(H, H)
        self.key = nn.Linear(H, H)
        self.value = nn.Linear(H, H)
        self.dropout_p = cfg.attention_probs_dropout_prob

    def forward(self, x: Tensor, mask: Tensor | None, is_causal: bool, pad: Unpadded | None) -> Tensor:
        # x: (B, T, H), or the (N, H) real tokens when pad is given (and then so is the output)
        # q, k and v in one product (one cast of x under autocast, one larger matmul)
        w = torch.cat([self.query.weight, self.key.weight, self.value.weight])  # (3H, H)
        b = torch.cat([self.query.bias, self.key.bias, self.value.bias])  # (3H,)
        qkv = F.linear(x, w, b)  # (B, T, 3H) or (N, 3H)
        qkv = qkv if pad is None else pad.scatter(qkv)  # (B, T, 3H)
        (B, T, H3), A = qkv.shape, self.n_head
        q, k, v = qkv.view(B, T, 3, A, H3 // (3 * A)).permute(2, 0, 3, 1, 4)  # 3 x (B, A, T, d)
        dropout_p = self.dropout_p if self.training else 0.0
        y = attention(q, k, v, mask, is_causal, dropout_p)  # softmax(q k^T / sqrt(d) + mask) v: (B, A, T, d)
        y = y.transpose(1, 2).reshape(B, T, H3 // 3)  # (B, T, H)
        return y if pad is None else pad.gather(y)


class BertSelfOutput(nn.Module):
    """Projection after attention, then the post-LN residual: LN(x + dropout(dense(y)))."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, y: Tensor, residual: Tensor, pad: Unpadded | None) -> Tensor:
        return self.LayerNorm(residual + dropout(self.dropout, self.dense(y), pad))  # (B, T, H) or (N, H)


class BertAttention(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(cfg)
        self.output = BertSelfOutput(cfg)

    def forward(self, x: Tensor, mask: Tensor | None, is_causal: bool, pad: Unpadded | None) -> Tensor:
        return self.output(self.self(x, mask, is_causal, pad), x, pad)  # (B, T, H) or (N, H)


class BertIntermediate(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.dense(x))  # (B, T, 4H), exact erf GELU


class BertOutput(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, h: Tensor, residual: Tensor, pad: Unpadded | None) -> Tensor:
        return self.LayerNorm(residual + dropout(self.dropout, self.dense(h), pad))  # (B, T, H) or (N, H)


class BertLayer(nn.Module):
    """One post-LN transformer block."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.attention = BertAttention(cfg)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertOutput(cfg)

    def forward(self, x: Tensor, mask: Tensor | None, is_causal: bool, pad: Unpadded | None = None) -> Tensor:
        x = self.attention(x, mask, is_causal, pad)  # (B, T, H), or (N, H) real tokens with pad
        return self.output(self.intermediate(x), x, pad)  # like x


class BertEncoder(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.num_hidden_layers))


class BertPooler(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, h: Tensor) -> Tensor:
        return torch.tanh(self.dense(h[:, 0]))  # (B, H), from the [CLS] position


def init_weights(module: nn.Module, std: float) -> None:
    """HF/TF BERT init: weights ~ N(0, std), biases 0, LayerNorm (1, 0), [PAD] row 0."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.Embedding) and module.padding_idx is not None:
        with torch.no_grad():
            module.weight[module.padding_idx].zero_()
    if isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class BertModelOutput(NamedTuple):
    last_hidden_state: Tensor  # (B, T, H)
    pooled_output: Tensor  # (B, H)
    hidden_states: tuple[Tensor, ...] | None  # L+1 of (B, T, H): embeddings, then each layer


class BertModel(nn.Module):
    """Embeddings + encoder + pooler (HF ``BertModel``)."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = BertEncoder(cfg)
        self.pooler = BertPooler(cfg)
        self.apply(lambda m: init_weights(m, cfg.initializer_range))

    def forward(
        self,
        input_ids: Tensor,  # (B, T) token ids
        token_type_ids: Tensor | None = None,  # (B, T) 0 = sentence A, 1 = sentence B
        attention_mask: Tensor | None = None,  # (B, T) 1 = real token, 0 = padding
        output_hidden_states: bool = False,
    ) -> BertModelOutput:
        T = input_ids.shape[1]
        if T > (n_pos := self.config.max_position_embeddings):
            raise ValueError(f"sequence length {T} > max_position_embeddings {n_pos}")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        mask, is_causal = None, False  # None: every query sees every key (fastest path)
        if attention_mask is not None and not torch.compiler.is_compiling() and bool(attention_mask.all()):
            attention_mask = None  # no padding (packed pretraining batches): skip the mask fill, same numbers
        if attention_mask is not None:
            mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T): True = may attend
            if self.config.causal:
                mask = mask & torch.ones(T, T, dtype=torch.bool, device=input_ids.device).tril()  # (B, 1, T, T)
        elif self.config.causal:
            is_causal = True  # SDPA's built-in lower-triangular mask

        x = self.embeddings(input_ids, token_type_ids)  # (B, T, H)
        # pad: training skips the padding (outputs there are zeros); eval computes it as HF does
        hidden_states, pad = [x], Unpadded.of(attention_mask) if self.training else None
        x = x if pad is None else pad.gather(x)  # (B, T, H) or (N, H)
        for layer in self.encoder.layer:
            x = layer(x, mask, is_causal, pad)
            hidden_states.append(x if pad is None or not output_hidden_states else pad.scatter(x))
        x = x if pad is None else pad.scatter(x)  # (B, T, H), zeros at the padding when unpadded
        pooled = self.pooler(x)  # (B, H)
        return BertModelOutput(x, pooled, tuple(hidden_states) if output_hidden_states else None)

    def num_parameters(self) -> int:
        """Embeddings + encoder + pooler: what the paper's 110M / 340M count."""
        return sum(p.numel() for p in self.parameters())


# --------------------------------------------------------------------------------------------
# Pretraining heads and loss


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, h: Tensor) -> Tensor:
        return self.LayerNorm(F.gelu(self.dense(h)))  # (..., H)


class BertLMPredictionHead(nn.Module):
    """MLM head. Its decoder weight is the word-embedding matrix, passed in at call time."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.transform = BertPredictionHeadTransform(cfg)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, h: Tensor, word_embeddings: Tensor) -> Tensor:
        return F.linear(self.transform(h), word_embeddings, self.bias)  # (..., H) -> (..., V)


class BertPreTrainingHeads(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(cfg)
        self.seq_relationship = nn.Linear(cfg.hidden_size, 2)


class PreTrainingOutput(NamedTuple):
    mlm_logits: Tensor  # (B, P, V) at masked_positions, or (B, T, V) when they were None
    nsp_logits: Tensor  # (B, 2): 0 = B follows A (IsNext), 1 = B is random (NotNext)
    hidden_states: tuple[Tensor, ...] | None  # as in BertModelOutput


class BertForPreTraining(nn.Module):
    """BERT with the MLM and NSP heads (HF ``BertForPreTraining``)."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.config = cfg
        self.bert = BertModel(cfg)
        self.cls = BertPreTrainingHeads(cfg)
        self.cls.apply(lambda m: init_weights(m, cfg.initializer_range))

    def forward(
        self,
        input_ids: Tensor,  # (B, T)
        token_type_ids: Tensor | None = None,  # (B, T)
        attention_mask: Tensor | None = None,  # (B, T)
        masked_positions: Tensor | None = None,  # (B, P) indices into T; padding entries may be 0
        output_hidden_states: bool = False,
    ) -> PreTrainingOutput:
        h, pooled, hidden_states = self.bert(input_ids, token_type_ids, attention_mask, output_hidden_states)  # (B, T, H), (B, H)
        if masked_positions is not None:
            idx = masked_positions[..., None].expand(-1, -1, h.shape[-1])  # (B, P, H)
            h = torch.gather(h, 1, idx)  # (B, P, H): only the tokens MLM must predict
        mlm_logits = self.cls.predictions(h, self.bert.embeddings.word_embeddings.weight)
        nsp_logits = self.cls.seq_relationship(pooled)  # (B, 2)
        return PreTrainingOutput(mlm_logits, nsp_logits, hidden_states)

    def num_parameters(self, include_heads: bool = True) -> int:
        """Unique parameters; the tied MLM decoder is the word embeddings, counted once."""
        return sum(p.numel() for p in (self if include_heads else self.bert).parameters())


class PreTrainingLoss(NamedTuple):
    loss: Tensor  # scalar: mlm + nsp, what to backpropagate
    mlm_loss: Tensor  # scalar: mean over real predictions
    nsp_loss: Tensor | None  # scalar, or None when nsp_labels was None
    mlm_accuracy: Tensor  # scalar: fraction of real predictions whose argmax is right


def pretraining_loss(
    mlm_logits: Tensor,  # (B, P, V)
    nsp_logits: Tensor,  # (B, 2)
    mlm_labels: Tensor,  # (B, P) original token ids; -100 where the slot is padding
    nsp_labels: Tensor | None = None,  # (B,) 0 IsNext / 1 NotNext; None skips NSP ("No NSP")
) -> PreTrainingLoss:
    """Mean MLM cross-entropy over real predictions + mean NSP cross-entropy (paper, A.2).

    The MLM mean is over all real predictions of the batch (not per sequence first), as in
    the reference code. A batch without any real prediction gives an MLM loss of 0.
    """
    logits = mlm_logits.reshape(-1, mlm_logits.shape[-1])  # (B*P, V), any float dtype
    labels = mlm_labels.reshape(-1)  # (B*P,)
    n_real = (labels != -100).sum().clamp(min=1)
    mlm_sum, argmax = mlm_cross_entropy(logits, labels)  # = F.cross_entropy(logits.float(), labels, reduction="sum")
    mlm_loss, mlm_accuracy = mlm_sum / n_real, (argmax == labels).sum() / n_real  # labels -100 never equal an argmax
    nsp_loss = None
    if nsp_labels is not None:
        nsp_loss = F.cross_entropy(nsp_logits.float(), nsp_labels.reshape(-1))  # mean over B
    loss = mlm_loss if nsp_loss is None else mlm_loss + nsp_loss
    return PreTrainingLoss(loss, mlm_loss, nsp_loss, mlm_accuracy)

