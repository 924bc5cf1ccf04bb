"""Text similarity for aligned-image expansion: a sentence-transformers model loaded from a local directory only
(nothing is downloaded at run time), and a tiny one built offline for tests and the demo."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path


class EmbeddingError(ValueError):
    """The embedding model cannot be used; the message says which setting or path to fix."""


def check_model(path: str) -> None:
    """EmbeddingError unless `path` is a local sentence-transformers model directory (nothing is loaded)."""
    if not path:
        raise EmbeddingError(
            "GUARDTRACE_EMBEDDING_MODEL is not set: aligned images need a local sentence-transformers model directory"
        )
    folder = Path(path)
    if not (folder / "modules.json").is_file():
        raise EmbeddingError(
            f"GUARDTRACE_EMBEDDING_MODEL={path}: not a sentence-transformers model directory"
        )


@lru_cache(maxsize=2)
def load_embedder(path: str):
    check_model(path)
    folder = Path(path)
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu", local_files_only=True)


def similarities(path: str, queries: Sequence[str], captions: Sequence[str]):
    """Cosine similarity of every query to every caption (a queries × captions array)."""
    model = load_embedder(path)
    q, c = (model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True, batch_size=64,
                         show_progress_bar=False) for texts in (queries, captions))  # fmt: skip
    return q @ c.T


def build_tiny_embedder(
    out_dir: Path, texts: Iterable[str], *, seed: int = 0, vocab_size: int = 2000
) -> Path:
    """A bag-of-words sentence model in BERT's clothes: random word vectors (no position or segment part, no
    transformer layers) averaged over a WordPiece vocabulary learnt from `texts`. Texts that share words get close
    embeddings, reliably, which is all the tests, the benchmark and the demo need."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import (
        BertConfig,
        BertModel,
        BertTokenizer,
    )  # BertTokenizer is the tokenizers-backed one

    out_dir = Path(out_dir)
    body = out_dir / "transformer"
    body.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer.train_from_iterator(
        list(texts), trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials)
    )
    BertTokenizer(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                      sep_token="[SEP]", mask_token="[MASK]").save_pretrained(body)  # fmt: skip
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=256, num_hidden_layers=0,
                        num_attention_heads=4, intermediate_size=256, max_position_embeddings=512)  # fmt: skip
    model = BertModel(
        config
    )  # its pooler is saved too (unused: mean pooling), so loading reports nothing missing
    with torch.no_grad():
        model.embeddings.position_embeddings.weight.zero_()
        model.embeddings.token_type_embeddings.weight.zero_()
    model.save_pretrained(body)
    transformer = Transformer(str(body), max_seq_length=256)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(out_dir))
    return out_dir
