"""A tiny CLIP for the offline demo: small CNN image tower, small text transformer, word tokenizer.

The model follows open_clip conventions so that the library's loss, sampler and zero-shot code
treat it like any open_clip model:

* ``model.encode_image(images)``: ``(N, C, H, W)`` float -> ``(N, D)`` float features
  (**not** normalised), differentiable;
* ``model.encode_text(tokens)``: ``(N, L)`` int64 token ids -> ``(N, D)`` float features
  (**not** normalised), differentiable;
* ``model.logit_scale``: a scalar ``nn.Parameter`` holding ``log(1 / 0.07)`` at init; the loss
  takes ``model.logit_scale.exp()``;
* ``model(images, tokens)`` returns ``(image_features, text_features, logit_scale.exp())`` with
  L2-normalised features.

It is meant for 32–128 pixel grayscale images and short texts, and trains in seconds on a CPU.
It is not a model of real radiographs.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from relaxclip._checks import check_int, check_real

__all__ = ["TEXT_CONTEXT_LENGTH", "TinyCLIP", "WordTokenizer"]

TEXT_CONTEXT_LENGTH = 58
"""The demo text tower's fixed context length in :class:`WordTokenizer` tokens (start and end
included), the analogue of CLIP's 77 BPE tokens.  CLIP's 77 tokens truncate 24.9 % of the
Open-I reports (findings + impression; open_clip ``SimpleTokenizer``); 58 word tokens truncate
a similar share of whole reports here (about 23-24 % of the calibrated synthetic training
reports and of the Open-I reports), while the longest single sentence (about 35 tokens
synthetic, 53 Open-I) always fits.  Measured and checked by ``benchmarks/realism.py`` and
``tests/test_realism_stats.py``."""

_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def _str_list(name: str, value: object, what: str) -> list[str]:
    """``value`` (an iterable of str, not a str itself) as a list; ``TypeError`` naming ``name``."""
    if isinstance(value, str | bytes):
        raise TypeError(
            f"{name} must be an iterable of {what} (str), not a single {type(value).__name__}; "
            f"wrap it in a list: [{value!r}]"
        )
    if not isinstance(value, Iterable):
        raise TypeError(f"{name} must be an iterable of str, got {type(value).__name__}")
    out = list(value)
    for i, item in enumerate(out):
        if not isinstance(item, str):
            raise TypeError(f"{name}[{i}] must be a str, got {type(item).__name__}")
    return out


class WordTokenizer:
    """Word-level tokenizer built from training text; callable ``list[str] -> LongTensor``.

    Text is lower-cased and split into runs of letters/digits and single punctuation marks.
    Ids: ``0`` pad, ``1`` unknown word, ``2`` start, ``3`` end, then the vocabulary in order of
    decreasing training frequency (ties alphabetical), so the vocabulary is deterministic.

    ``tokenizer(texts)`` returns an ``int64`` tensor of shape ``(len(texts), context_length)``:
    ``[start, w1, ..., wn, end, pad, ...]``.  A text with more than ``context_length - 2`` words is
    truncated to its first ``context_length - 2`` words followed by ``end`` (the CLIP convention);
    :meth:`count_truncated` reports how many texts that affects.  The object holds only a dict and
    ints, so it pickles (e.g. for DataLoader workers).
    """

    PAD, UNK, START, END = 0, 1, 2, 3
    SPECIALS = ("<pad>", "<unk>", "<start>", "<end>")

    def __init__(self, vocab: Sequence[str], context_length: int = 64) -> None:
        context_length = check_int("context_length", context_length, minimum=3)
        words = _str_list("vocab", vocab, "words")
        if len(set(words)) != len(words):
            raise ValueError("vocab must not contain duplicate words")
        clash = set(words) & set(self.SPECIALS)
        if clash:
            raise ValueError(f"vocab must not contain the special tokens {sorted(clash)}")
        bad = [w for w in words if self.split(w) != [w]]
        if bad:
            raise ValueError(
                f"vocab: {bad[:3]} are not single lower-case tokens of WordTokenizer.split (a word "
                "of letters/digits or one punctuation mark); such entries could never be matched"
            )
        self.context_length = context_length
        self.itos: list[str] = list(self.SPECIALS) + words
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}

    @staticmethod
    def split(text: str) -> list[str]:
        """Lower-case ``text`` and split it into words and punctuation marks."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return _WORD.findall(text.lower())

    @classmethod
    def build(
        cls, texts: Iterable[str], *, min_count: int = 1, context_length: int | None = None
    ) -> WordTokenizer:
        """Build the vocabulary from ``texts`` (words seen at least ``min_count`` times).

        ``texts`` is an iterable of str (a single str is rejected: it is not a list of texts).
        ``context_length=None`` picks the longest training text (in words) + 2, so no training
        text is truncated.
        """
        min_count = check_int("min_count", min_count, minimum=1)
        if context_length is not None:
            context_length = check_int("context_length", context_length, minimum=3)
        counts: Counter[str] = Counter()
        longest = 0
        n = 0
        for text in _str_list("texts", texts, "texts"):
            words = cls.split(text)
            counts.update(words)
            longest = max(longest, len(words))
            n += 1
        if n == 0:
            raise ValueError("texts must contain at least one text")
        vocab = sorted(
            (w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w)
        )
        vocab = [w for w in vocab if w not in cls.SPECIALS]
        return cls(vocab, context_length if context_length is not None else longest + 2)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        """Ids of one text without start/end/padding or truncation."""
        return [self.stoi.get(w, self.UNK) for w in self.split(text)]

    def count_truncated(self, texts: Sequence[str]) -> int:
        """Number of ``texts`` longer than ``context_length - 2`` words."""
        return sum(
            len(self.split(t)) > self.context_length - 2 for t in _str_list("texts", texts, "texts")
        )

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, Sequence):
            raise TypeError(f"texts must be a str or a sequence of str, got {type(texts).__name__}")
        texts = _str_list("texts", texts, "texts")
        out = torch.full((len(texts), self.context_length), self.PAD, dtype=torch.long)
        for i, text in enumerate(texts):
            ids = self.encode(text)[: self.context_length - 2]
            row = [self.START, *ids, self.END]
            out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        return out

    def __repr__(self) -> str:
        return f"WordTokenizer(vocab_size={self.vocab_size}, context_length={self.context_length})"


def _channels(channels: object) -> tuple[int, ...]:
    if isinstance(channels, str) or not isinstance(channels, Sequence):
        raise TypeError(f"channels must be a sequence of ints, got {type(channels).__name__}")
    if len(channels) == 0:
        raise ValueError("channels must name at least one conv block width, got ()")
    return tuple(check_int(f"channels[{i}]", c, minimum=1) for i, c in enumerate(channels))


def _check_token_ids(tokens: torch.Tensor, pad: torch.Tensor, vocab_size: int) -> None:
    """Ids in ``[0, vocab_size)`` and at least one non-padding token per row."""
    if tokens.numel() == 0:
        return
    lo, hi = int(tokens.min()), int(tokens.max())
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        raise ValueError(f"tokens: id {bad} is outside the vocabulary [0, {vocab_size})")
    empty = pad.all(1).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"tokens: row(s) {empty[:5]} contain only padding (id 0)")


class _ConvBlock(nn.Sequential):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )


class TinyCLIP(nn.Module):
    """Small two-tower contrastive model (see module docstring for the interface).

    Image tower: a stride-2 3x3 conv stem (``channels[0]`` maps), then ``len(channels)`` blocks of
    3x3 conv + BatchNorm + ReLU + 2x2 max-pool (so the side shrinks by ``2 ** (len(channels) + 1)``);
    then the feature map is flattened (keeping *where* a pattern is, which matters for findings
    defined by location) and projected linearly to ``embed_dim``.
    Text tower (as CLIP's): token + learned position embeddings, ``text_layers`` pre-norm
    transformer encoder layers (``text_heads`` heads, width ``text_width``) with a causal
    attention mask, final LayerNorm, then the hidden state of the end-of-text token alone (the
    last non-padding position of each row, where :class:`WordTokenizer` puts ``<end>``) projected
    linearly to ``embed_dim``.  Like CLIP's EOT token (and the ``[CLS]`` token of BERT-style
    towers such as BiomedCLIP's), one token summarises the text; there is no mean over tokens.

    Args:
        vocab_size: number of token ids (``WordTokenizer.vocab_size``).
        context_length: token sequence length ``L`` accepted by :meth:`encode_text`.
        image_size: side of the square input images (divisible by ``2 ** (len(channels) + 1)``).
        in_channels: image channels (1 for grayscale).
        embed_dim: joint embedding size ``D``.
        channels: conv block widths.
        text_width, text_layers, text_heads: text transformer size.
        init_logit_scale: initial temperature ``T``; ``logit_scale`` is initialised to ``log(1/T)``.
    """

    def __init__(
        self,
        vocab_size: int,
        context_length: int,
        *,
        image_size: int = 64,
        in_channels: int = 1,
        embed_dim: int = 64,
        channels: Sequence[int] = (16, 32, 64),
        text_width: int = 64,
        text_layers: int = 2,
        text_heads: int = 4,
        init_logit_scale: float = 0.07,
    ) -> None:
        super().__init__()
        vocab_size = check_int("vocab_size", vocab_size, minimum=5)
        context_length = check_int("context_length", context_length, minimum=3)
        channels = _channels(channels)
        down = 2 ** (len(channels) + 1)
        image_size = check_int("image_size", image_size, minimum=down)
        if image_size % down:
            raise ValueError(f"image_size must be divisible by {down}, got {image_size}")
        in_channels = check_int("in_channels", in_channels, minimum=1)
        embed_dim = check_int("embed_dim", embed_dim, minimum=1)
        text_layers = check_int("text_layers", text_layers, minimum=1)
        text_heads = check_int("text_heads", text_heads, minimum=1)
        text_width = check_int("text_width", text_width, minimum=text_heads)
        if text_width % text_heads:
            raise ValueError(
                f"text_width ({text_width}) must be divisible by text_heads ({text_heads})"
            )
        init_logit_scale = check_real("init_logit_scale", init_logit_scale, low=0.0, low_open=True)
        self.vocab_size = vocab_size
        self.in_channels = in_channels
        self.image_size = image_size
        self.context_length = context_length
        stem = channels[0]
        blocks: list[nn.Module] = [
            nn.Conv2d(in_channels, stem, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(stem),
            nn.ReLU(inplace=True),
        ]
        c = stem
        for width in channels:
            blocks.append(_ConvBlock(c, width))
            c = width
        self.visual = nn.Sequential(*blocks)
        side = image_size // down
        self.visual_proj = nn.Sequential(
            nn.Flatten(), nn.Dropout(0.1), nn.Linear(c * side * side, embed_dim)
        )

        self.token_embedding = nn.Embedding(vocab_size, text_width, padding_idx=0)
        self.positional_embedding = nn.Parameter(torch.randn(context_length, text_width) * 0.01)
        layer = nn.TransformerEncoderLayer(
            text_width,
            text_heads,
            dim_feedforward=2 * text_width,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.transformer = nn.TransformerEncoder(layer, text_layers, enable_nested_tensor=False)
        self.ln_final = nn.LayerNorm(text_width)
        self.text_projection = nn.Linear(text_width, embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_logit_scale)))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` float images (``C = in_channels``, ``H = W = image_size``) ->
        ``(N, D)`` unnormalised features."""
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
        expected = (self.in_channels, self.image_size, self.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"images must have shape (N, {', '.join(map(str, expected))}), "
                f"got {tuple(images.shape)}"
            )
        if not images.is_floating_point():
            raise TypeError(f"images must be a floating-point tensor, got {images.dtype}")
        return self.visual_proj(self.visual(images))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(N, L)`` int64 token ids (0 = padding) -> ``(N, D)`` unnormalised features.

        ``L`` may be shorter than ``context_length`` (trailing padding columns can be cut off
        for speed: the result is the same up to float rounding, since padding is masked).
        Padding must be trailing (``[start, ..., end, 0, 0]``): the feature is the transformer
        output at each row's last non-padding position (the end-of-text token), and with the
        causal mask it depends on that token and the tokens before it only.
        """
        if not isinstance(tokens, torch.Tensor):
            raise TypeError(f"tokens must be a torch.Tensor, got {type(tokens).__name__}")
        if tokens.dim() != 2 or not 1 <= tokens.shape[1] <= self.context_length:
            raise ValueError(
                f"tokens must have shape (N, L) with 1 <= L <= {self.context_length}, "
                f"got {tuple(tokens.shape)}"
            )
        if tokens.dtype != torch.long:
            raise TypeError(f"tokens must be int64, got {tokens.dtype}")
        pad = tokens == 0
        _check_token_ids(tokens, pad, self.vocab_size)
        n = tokens.shape[1]
        length = (~pad).sum(1)
        trailing = torch.arange(n, device=tokens.device) >= length.unsqueeze(1)
        misplaced = (pad != trailing).any(1).nonzero().flatten().tolist()
        if misplaced:
            raise ValueError(
                f"tokens: padding (id 0) must only follow the text (the end-of-text token is the "
                f"last non-padding one); row(s) {misplaced[:5]} have padding before a token"
            )
        causal = torch.ones(n, n, dtype=torch.bool, device=tokens.device).triu(1)
        x = self.token_embedding(tokens) + self.positional_embedding[:n]
        x = self.transformer(x, mask=causal, src_key_padding_mask=pad, is_causal=True)
        x = self.ln_final(x)
        eot = x[torch.arange(x.shape[0], device=x.device), (length - 1).clamp_min(0)]
        return self.text_projection(eot)

    def forward(
        self, images: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised image and text features and ``logit_scale.exp()`` (open_clip style)."""
        if isinstance(images, torch.Tensor) and isinstance(tokens, torch.Tensor):
            if images.shape[:1] != tokens.shape[:1]:
                raise ValueError(
                    f"images and tokens must have the same batch size N, got "
                    f"{tuple(images.shape)} and {tuple(tokens.shape)}"
                )
        img = F.normalize(self.encode_image(images), dim=-1)
        txt = F.normalize(self.encode_text(tokens), dim=-1)
        return img, txt, self.logit_scale.exp()
