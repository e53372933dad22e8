"""Test helpers shared by the suite: tiny random-weight models of each norm family.

Tiny models use distinct prime sizes (d_model 28 is not prime because RoPE needs even head
dims; vocab 101, 3 layers, context 67) so a swapped axis fails loudly. Import from here
(``from tests.helpers import make_tiny_folder``); ``conftest.py`` only defines fixtures.
"""

from pathlib import Path

import torch

import glt

VOCAB = 101
WORDS = (
    "the a of and to in is was for on that with as by at it he she his her they capital france "
    "paris city country river is are were be been has have had not but or an this which from"
).split()


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<bos>": 1, "<unk>": 2}
    for w in WORDS + [",", "."]:
        vocab.setdefault(w, len(vocab))
    for i in range(len(vocab), VOCAB):
        vocab[f"w{i}"] = i
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    from tokenizers import processors

    tk.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<bos>", pad_token="<pad>", unk_token="<unk>"
    )


def _hf_config(family: str):
    from transformers import Gemma3TextConfig, GPT2Config, LlamaConfig

    if family == "gpt2":
        return GPT2Config(vocab_size=VOCAB, n_positions=67, n_embd=28, n_layer=3, n_head=4)
    if family == "llama":
        return LlamaConfig(
            vocab_size=VOCAB, hidden_size=28, intermediate_size=44, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=67,
        )
    if family == "gemma3":
        return Gemma3TextConfig(
            vocab_size=VOCAB, hidden_size=28, intermediate_size=44, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=1, head_dim=8, max_position_embeddings=67,
            sliding_window=5, final_logit_softcapping=30.0,
        )
    raise ValueError(family)


def make_tiny_folder(family: str, root: Path, seed: int = 0) -> Path:
    """Save a random-weight HF model of ``family`` with a word-level tokenizer under ``root``."""
    from transformers import AutoModelForCausalLM

    folder = root / f"tiny-{family}"
    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(seed)
    cfg = _hf_config(family)
    model = AutoModelForCausalLM.from_config(cfg)
    cfg.architectures = [type(model).__name__]
    with torch.no_grad():  # larger weights so layers differ visibly from one another
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.3)
    model.save_pretrained(folder)
    _tokenizer().save_pretrained(folder)
    return folder


def _tiny_hooked(family: str, root: Path):
    """TransformerLens 2.x: a random-weight HookedTransformer built from a config."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformers import AutoTokenizer

    folder = root / "tiny-tokenizer"
    if not folder.is_dir():
        _tokenizer().save_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(str(folder))
    common = dict(
        n_layers=3, d_model=28, n_ctx=67, d_head=7, n_heads=4, d_mlp=44, d_vocab=VOCAB,
        act_fn="gelu_new", seed=0, initializer_range=0.3,
    )
    if family == "gpt2":
        cfg = HookedTransformerConfig(normalization_type="LN", **common)
    elif family == "llama":
        cfg = HookedTransformerConfig(
            normalization_type="RMS", positional_embedding_type="rotary", rotary_dim=6, **common
        )
    else:
        cfg = HookedTransformerConfig(
            normalization_type="RMS", positional_embedding_type="rotary", rotary_dim=6,
            output_logits_soft_cap=30.0, **common,
        )
    model = HookedTransformer(cfg, tokenizer=tok).eval()
    model._glt_tokenizer = tok
    return model


def load_tiny(family: str, root: Path):
    """A tiny model of ``family`` for the installed TransformerLens (bridge on >= 3)."""
    from glt.core._models import tl_major_version

    if tl_major_version() < 3:
        return _tiny_hooked(family, root)
    return glt.load_model(str(make_tiny_folder(family, root)))


