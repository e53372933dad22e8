"""Test helpers shared by the suite: tiny random-weight models of each norm family.

Tiny models use distinct prime sizes (d_model 28 is not prime because RoPE needs even head
dims; vocab 101, 3 layers, context 67) so a swapped axis fails loudly. Import from here
(``from tests.helpers import make_tiny_folder``); ``conftest.py`` only defines fixtures.
"""

import dataclasses
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

import glt
from glt.studies.fact_recall._data import Fact
from glt.studies.fact_recall._run import SKIP_LONG, FactRecallResult

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


def _hf_config(family: str, n_layers: int = 3):
    from transformers import Gemma3TextConfig, GPT2Config, LlamaConfig

    if family == "gpt2":
        return GPT2Config(vocab_size=VOCAB, n_positions=67, n_embd=28, n_layer=n_layers, n_head=4)
    if family == "llama":
        return LlamaConfig(
            vocab_size=VOCAB, hidden_size=28, intermediate_size=44, num_hidden_layers=n_layers,
            num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=67,
        )
    if family == "gemma3":
        return Gemma3TextConfig(
            vocab_size=VOCAB, hidden_size=28, intermediate_size=44, num_hidden_layers=n_layers,
            num_attention_heads=4, num_key_value_heads=1, head_dim=8, max_position_embeddings=67,
            sliding_window=5, final_logit_softcapping=30.0,
        )
    raise ValueError(family)


def make_tiny_folder(family: str, root: Path, seed: int = 0, n_layers: int = 3) -> Path:
    """Save a random-weight HF model of ``family`` with a word-level tokenizer under ``root``
    (``n_layers`` blocks; folders of other depths than 3 are named ``tiny-<family>-<n>l``)."""
    from transformers import AutoModelForCausalLM

    folder = root / (f"tiny-{family}" if n_layers == 3 else f"tiny-{family}-{n_layers}l")
    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(seed)
    cfg = _hf_config(family, n_layers)
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




def _tail(text: str | bytes | None, n: int = 3000) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return (text or "")[-n:]


def run_bounded(argv: Sequence[str], *, what: str, timeout: float, check: bool = False,
                **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run`` with a bounded wait (output captured as text unless told otherwise).

    Past ``timeout`` seconds the child is killed and the test fails naming ``what`` it waited
    for, the command and the output so far; with ``check`` a non-zero exit fails the same way.
    """
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    try:
        done = subprocess.run(list(map(str, argv)), timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} ({' '.join(map(str, argv))});"
                    f" output so far:\n{_tail(e.stdout)}\n{_tail(e.stderr)}", pytrace=False)
    if check and done.returncode != 0:
        pytest.fail(f"{what} exited with status {done.returncode} ({' '.join(map(str, argv))}):\n"
                    f"{_tail(done.stdout)}\n{_tail(done.stderr)}", pytrace=False)
    return done


def wait_bounded(proc: subprocess.Popen, *, what: str, timeout: float) -> int:
    """``proc.wait`` with a bounded wait: past ``timeout`` s kill it and fail naming ``what``."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=60)
        pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (pid {proc.pid}, killed)", pytrace=False)


def synthetic_readout(n_layer: int = 19, n_pos: int = 1000, k: int = 5, vocab: int = 50_021, seed: int = 0):
    """A `glt.Readout` of one text with random (but well-formed) statistics, for sizing the explorer
    without a forward pass: top-k log-probabilities sorted, the final top-1 as the target (rank 0 and
    KL 0 at the final layer)."""
    from glt.core._capture import layer_labels

    g = torch.Generator().manual_seed(seed)
    top = torch.randint(0, vocab, (n_layer, n_pos, k), generator=g)
    lp = (-12 * torch.rand(n_layer, n_pos, k, generator=g)).sort(-1, descending=True).values
    ranks = torch.randint(0, vocab, (n_layer, n_pos, 1), generator=g)
    ranks[-1] = 0
    kl = torch.rand(n_layer, n_pos, generator=g) * 5
    kl[-1] = 0
    return glt.Readout(
        layer_labels=layer_labels(n_layer - 1), batch_index=torch.zeros(n_pos, dtype=torch.long),
        pos_index=torch.arange(n_pos), input_ids=torch.randint(0, vocab, (n_pos,), generator=g),
        targets=top[-1, :, :1].clone(), ranks=ranks, target_logprobs=-torch.rand(n_layer, n_pos, 1, generator=g) * 20,
        topk_ids=top, topk_logprobs=lp, entropy=torch.rand(n_layer, n_pos, generator=g) * 8, kl_to_final=kl,
        lens="logit")


def assert_same_result(a, b, where=""):
    """Field-by-field equality of two results (tensors exactly, NaN equal to NaN)."""
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        assert type(a) is type(b), where
        for f in dataclasses.fields(a):
            assert_same_result(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b) or bool(torch.isclose(a, b, rtol=0, atol=0, equal_nan=True).all()), where
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_result(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and a != a:
        assert b != b, where
    else:
        assert a == b, where


def save_tiny_jacobian_lens(model, folder: Path, seed: int = 1) -> Path:
    """Save a random Jacobian lens for a tiny 3-block, d_model 28 model (``J = I + 0.3 noise``,
    residual 0 fitted, 5 prompts recorded) to ``folder``."""
    J = torch.eye(28) + 0.3 * torch.randn(3, 28, 28, generator=torch.Generator().manual_seed(seed))
    return glt.JacobianLens.from_model(model, {"n_prompts": 5}).set_jacobian(J, residual_0="fitted").save(folder)


def hand_built_fact_result(correct: Sequence[bool] = (True, False, True, False)):
    """A fact-recall result built by hand: 3 facts over 4 residuals (n_layers = 3), A (1 token),
    B (2 tokens), C (1 token); input fact 2 was skipped. ``correct`` is per row (A0, B0, B1, C0);
    the default has A0 and B1 right, B0 and C0 wrong, so both outcomes have tokens."""
    per_row = [  # rank over the 4 residuals for rows A0, B0, B1, C0
        [5, 0, 3, 0],
        [8, 20, 2, 4],
        [9, 2, 0, 0],
        [50, 9, 30, 1],
    ]
    return FactRecallResult(
        model="m", lens="logit", sources=("s",), ks=(1, 10), layer_labels=("e", "1", "2", "f"),
        max_answer_tokens=3, accept_unspaced=True, n_input=4,
        facts=(Fact("p", "a"), Fact("q", "b c"), Fact("r", "d")), fact_index=(0, 1, 3),
        skipped=((2, SKIP_LONG),), answer_tokens=((2,), (3, 4), (5,)),
        row_fact=torch.tensor([0, 1, 1, 2]), row_position=torch.tensor([0, 0, 1, 0]),
        gold=torch.tensor([2, 3, 4, 5]), tracked=torch.tensor([2, 3, 4, 5]),
        correct=torch.tensor(list(correct)), ranks=torch.tensor(per_row).T,
        logprobs=torch.zeros(4, 4), top1=torch.zeros(4, 4, dtype=torch.long),
        max_prob=torch.ones(4, 4),
    )
