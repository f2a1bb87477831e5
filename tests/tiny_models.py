"""Tiny random-weight sentence-transformers models of other architectures, built in tests.

No hub: BERT-likes reuse the bundled MiniLM tokenizer; XLM-R gets a small Unigram
(SentencePiece-style) tokenizer trained here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "query: what is the capital of france",
    "passage: paris is the capital of france",
    "das wetter ist heute sonnig",
    "le chocolat noir est trop amer",
    "東京は日本の首都です",
    "great coffee, smooth and rich",
    "stale crackers in a crushed box",
] * 20


def _bert_tokenizer_dir(minilm_dir: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(Path(minilm_dir) / name, out / name)


def _xlmr_tokenizer(out: Path):
    from tokenizers import SentencePieceUnigramTokenizer
    from transformers import XLMRobertaTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    sp = SentencePieceUnigramTokenizer()
    sp.train_from_iterator(CORPUS, vocab_size=300, special_tokens=specials, unk_token="<unk>")
    tok = XLMRobertaTokenizerFast(tokenizer_object=sp, bos_token="<s>", eos_token="</s>",
                                  sep_token="</s>", cls_token="<s>", unk_token="<unk>",
                                  pad_token="<pad>", mask_token="<mask>")
    from tokenizers.processors import TemplateProcessing

    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", tok.convert_tokens_to_ids("<s>")),
                        ("</s>", tok.convert_tokens_to_ids("</s>"))])
    tok.save_pretrained(out)
    return tok


def build_tiny_model(
    path: Path,
    minilm_dir: str,
    arch: str = "bert",
    pooling: str | tuple[str, ...] = "mean",
    dense: bool = False,
    normalize: bool = True,
    max_seq_length: int = 128,
    seed: int = 0,
) -> str:
    """Save a sentence-transformers model (random weights) to ``path``; return its path."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, XLMRobertaConfig, XLMRobertaModel

    torch.manual_seed(seed)
    base = path.parent / f"{path.name}-hf"
    if arch == "bert":
        _bert_tokenizer_dir(minilm_dir, base)
        config = BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2,
                            num_attention_heads=4, intermediate_size=128,
                            max_position_embeddings=512)
        BertModel(config).save_pretrained(base)
    elif arch == "xlm-roberta":
        tok = _xlmr_tokenizer(base)
        config = XLMRobertaConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=128,
                                  max_position_embeddings=130, pad_token_id=tok.pad_token_id,
                                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                  type_vocab_size=1)
        XLMRobertaModel(config).save_pretrained(base)
    else:
        raise ValueError(arch)
    transformer = models.Transformer(str(base), max_seq_length=max_seq_length)
    modules = [transformer, models.Pooling(transformer.get_word_embedding_dimension(),
                                           pooling_mode=pooling)]
    if dense:
        modules.append(models.Dense(modules[-1].get_sentence_embedding_dimension(), 32,
                                    activation_function=torch.nn.Tanh()))
    if normalize:
        modules.append(models.Normalize())
    SentenceTransformer(modules=modules, device="cpu").save(str(path))
    shutil.rmtree(base)
    return str(path)


def export_model_graph(model_dir: Path) -> Path:
    """Write ``onnx/model.onnx`` in sentence-transformers' ONNX layout (the transformer
    alone: ids, mask, token types in; ``last_hidden_state`` out), as hub models ship it."""
    from transformers import AutoModel

    class Transformer(torch.nn.Module):
        def __init__(self, model) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    model = Transformer(AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval())
    ids = torch.ones(2, 8, dtype=torch.long)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]}
    out = Path(model_dir) / "onnx" / "model.onnx"
    out.parent.mkdir(exist_ok=True)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shape checks
        torch.onnx.export(model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(out),
                          input_names=names, output_names=["last_hidden_state"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    return out
