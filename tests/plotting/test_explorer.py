"""The layer explorer's HTML, without a browser: stored data equal the read-out, escaping, size.

The page itself (hover, click, paging, no script injection) is checked in a real browser in
tests/browser/test_explorer_browser.py.
"""

import base64
import dataclasses
import json
import re

import numpy as np
import pytest
import torch

import glt
from glt.plotting._explorer import _LP_FLOOR, _asset, visible_token
from tests.helpers import synthetic_readout

_DATA = re.compile(r'<script type="application/json" class="glt-x-data">(.*?)</script>', re.S)


def payload(page: str) -> dict:
    """The JSON the page draws from (checks that exactly one data block is embedded)."""
    found = _DATA.findall(page)
    assert len(found) == 1
    return json.loads(found[0])


def arr(text: str, dtype: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=dtype)


@pytest.fixture(scope="module")
def tiny_read(tiny_llama):
    stack = glt.capture_residuals(tiny_llama, ["the capital of france is paris"])
    return glt.readout(stack, glt.LogitLens.from_model(tiny_llama), top_k=4)


def test_stored_data_equal_the_readout(tiny_read, tiny_llama):
    r = tiny_read
    ex = glt.Explorer.from_readouts(r, tokenizer=tiny_llama.tokenizer)
    d = payload(ex.to_html())
    n_l, n_p, k = r.topk_ids.shape
    assert (ex.n_layers, ex.n_positions, ex.lenses) == (n_l, n_p, ("logit",))
    assert d["layers"] == list(r.layer_labels) and d["layers"][0] == "embed" and d["k"] == k
    assert d["positions"] == r.pos_index.tolist()
    vocab = arr(d["sid"], "<i4")
    v = d["lenses"][0]
    ids = "<u2" if d["idw"] == 2 else "<u4"
    top = vocab[arr(v["top"], ids)].reshape(n_l, n_p, k)  # one top-k list per cell, nothing more
    np.testing.assert_array_equal(top, r.topk_ids.numpy())
    np.testing.assert_array_equal(vocab[arr(d["input"], ids)], r.input_ids.numpy())
    lp = arr(v["lp"], "<i2").reshape(n_l, n_p, k) / 1000
    np.testing.assert_allclose(lp, r.topk_logprobs.numpy(), atol=5e-4 + 1e-7)
    np.testing.assert_array_equal(arr(v["rank"], "<i4").reshape(n_l, n_p, 1), r.ranks.numpy())
    np.testing.assert_array_equal(arr(v["tlp"], "<f4").reshape(n_l, n_p, 1), r.target_logprobs.numpy())
    np.testing.assert_array_equal(arr(v["ent"], "<f4").reshape(n_l, n_p), r.entropy.numpy())
    np.testing.assert_array_equal(arr(v["kl"], "<f4").reshape(n_l, n_p), r.kl_to_final.numpy())
    assert v["tnames"] == ["final top-1"] and v["final"] == 0
    decode = tiny_llama.tokenizer.decode
    assert d["strings"] == [visible_token(decode([int(i)])) for i in vocab]


def test_explore_with_targets_and_two_lenses(tiny_llama):
    tuned = glt.TunedLens.from_model(tiny_llama)
    with torch.no_grad():  # a random translator, so the two lenses' data differ
        g = torch.Generator().manual_seed(0)
        tuned.weight.copy_(0.5 * torch.randn(tuned.weight.shape, generator=g))
        tuned.bias.copy_(0.5 * torch.randn(tuned.bias.shape, generator=g))
    ex = glt.explore(tiny_llama, "the capital of france is", lenses={"logit": "logit", "tuned": tuned},
                     targets=["paris", 5], top_k=3, color="target_rank")
    d = ex.data
    assert ex.lenses == ("logit", "tuned") and d["stat"] == "trank" and d["k"] == 3
    stack = glt.capture_residuals(tiny_llama, ["the capital of france is"])
    logit = glt.LogitLens.from_model(tiny_llama)
    final = glt.readout(stack, logit, top_k=1).top1[-1]
    paris = tiny_llama.tokenizer("paris", add_special_tokens=False)["input_ids"][0]
    targets = torch.stack([final, torch.full_like(final, paris), torch.full_like(final, 5)], 1)
    wants = [glt.readout(stack, lens, targets=targets, top_k=3) for lens in (logit, tuned)]
    assert not torch.equal(wants[0].ranks, wants[1].ranks), "the two lenses must read differently"
    assert len(d["lenses"]) == 2
    for v, want in zip(d["lenses"], wants, strict=True):  # each lens's own read-out, in the order given
        assert v["tnames"][:2] == ["final top-1", "paris"] and v["t"] == 3
        np.testing.assert_array_equal(arr(v["rank"], "<i4").reshape(want.ranks.shape), want.ranks.numpy())
    one = glt.explore(tiny_llama, "the capital of france is", targets="paris", top_k=3)  # one string, one token
    assert one.data["lenses"][0]["tnames"] == ["final top-1", "paris"]


def test_escaping_keeps_markup_out_of_the_page():
    evil = ["</script><script>window.__pwned=1</script>", "<!--", "a&amp;b", "\u2028", '"><img src=x onerror=1>',
            "\n", " ", "", "\x00"]
    r = dataclasses.replace(synthetic_readout(n_layer=3, n_pos=9, k=2, vocab=9), input_ids=torch.arange(9))
    ex = glt.Explorer.from_readouts(r, tokenizer=lambda i: evil[i], title="<script>alert(1)</script> & co")
    page = ex.to_html()
    block = _DATA.findall(page)[0]
    assert not set("<>&") & set(block)  # nothing in the data can end the script element or open a tag
    assert page.count("<script") == 2 and page.count("</script>") == 2  # the data block and the page script
    assert "<title>&lt;script&gt;alert(1)&lt;/script&gt; &amp; co</title>" in page
    d = json.loads(block)
    assert d["title"] == "<script>alert(1)</script> & co"
    assert set(d["strings"]) == {visible_token(s) for s in evil}


@pytest.mark.parametrize("raw, shown", [
    (" Paris", "\u2423Paris"), ("  ", "\u2423\u2423"), ("\n\n", "\\n\\n"), ("\t", "\\t"), ("\r", "\\r"),
    ("", "\u2205"), ("\u00a0", "U+00A0"), ("\u200b", "U+200B"), ("\x07", "U+0007"), ("\u7684", "\u7684"),
    ("caf\u00e9", "caf\u00e9"), ("<b>", "<b>"),
])
def test_visible_token(raw, shown):
    assert visible_token(raw) == shown


def test_page_is_offline_and_never_uses_inner_html():
    js, css = _asset("explorer.js"), _asset("explorer.css")
    assert "<script" not in js.lower() and "</style" not in css.lower() and "<!--" not in js
    for bad in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "fetch(", "XMLHttpRequest",
                "import(", "https://"):
        assert bad not in js, bad
    assert "url(" not in css and "@import" not in css
    page = glt.Explorer.from_readouts(synthetic_readout(n_layer=3, n_pos=4, k=2, vocab=11)).to_html()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)


def test_size_is_top_k_only_and_linear_in_positions():
    """Every array is counted byte by byte: a file holding more than the top-k per cell fails."""
    def size_and_bound(n_pos):
        r = synthetic_readout(n_layer=19, n_pos=n_pos, k=5, vocab=50_021)
        ex = glt.Explorer.from_readouts(r, tokenizer=lambda i: f"w{i}")
        page = ex.to_html()
        n_l, n_s = 19, len(ex.data["strings"])
        width = 2 if ex.data["idw"] == 2 else 4
        raw = n_l * n_pos * 5 * (width + 2) + n_l * n_pos * (4 + 4 + 4 + 4) + n_pos * width * 2 + n_s * 4
        strings = len(json.dumps(ex.data["strings"]))
        fixed = len(_asset("explorer.js")) + len(_asset("explorer.css")) + 3000
        return len(page.encode()), 4 * (raw + 2) / 3 + strings + fixed
    small, small_bound = size_and_bound(64)
    big, big_bound = size_and_bound(1000)
    assert small <= small_bound and big <= big_bound
    assert small < 200_000 and big < 2_000_000  # 19 layers, top-5, random ids: ~48k distinct strings
    assert 6 < big / small < 1000 / 64


def test_fragment_and_save(tmp_path, tiny_read):
    ex = glt.Explorer.from_readouts([tiny_read])
    frag = ex._repr_html_()
    assert frag.startswith('<div class="glt-x"') and "<html" not in frag and "glt-x-nojs" in frag
    a, b = ex.to_html(standalone=False), ex.to_html(standalone=False)
    assert a != b  # a fresh element id each time: two views can share a notebook page
    out = ex.save(tmp_path / "sub" / "explorer.html")
    assert out == tmp_path / "sub" / "explorer.html" and out.read_text("utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in out.parent.iterdir()] == ["explorer.html"]  # atomic: no temporary left behind


def test_quantised_log_probabilities_floor():
    r = synthetic_readout(n_layer=2, n_pos=3, k=2, vocab=5)
    lp = r.topk_logprobs.clone()
    lp[0, 0] = torch.tensor([-40.0, -float("inf")])
    r = dataclasses.replace(r, topk_logprobs=lp)
    v = glt.Explorer.from_readouts(r).data["lenses"][0]
    assert arr(v["lp"], "<i2")[:2].tolist() == [_LP_FLOOR, _LP_FLOOR]


def _bad_readouts(r):
    other = synthetic_readout(n_layer=4, n_pos=r.n_rows, k=2, vocab=11)
    shifted = synthetic_readout(n_layer=r.ranks.shape[0], n_pos=r.n_rows, k=2, vocab=11, seed=1)
    return [
        ({}, {}, "readouts is empty"),
        ("logit", {}, "readouts must be a glt.Readout"),
        ({"a": 3}, {}, r"readouts\['a'\] must be a glt.Readout"),
        ([r, r], {}, "both named 'logit'"),
        (r, {"batch": 2}, "batch 2 is not in read-out"),
        ({"a": r, "b": other}, {}, "has 4 layers"),
        ({"a": r, "b": shifted}, {}, "other positions or tokens"),
        (r, {"color": "hue"}, "color"),
        (r, {"tokenizer": 3}, "tokenizer must have .decode"),
    ]


@pytest.mark.parametrize("case", range(9))
def test_from_readouts_errors(case):
    r = synthetic_readout(n_layer=3, n_pos=4, k=2, vocab=11)
    readouts, kw, match = _bad_readouts(r)[case]
    with pytest.raises(glt.GltError, match=match):
        glt.Explorer.from_readouts(readouts, **kw)


@pytest.mark.parametrize("kw, match", [
    ({"text": "  "}, "text is empty"),
    ({"text": 3}, "argument text must be str"),
    ({"lenses": "kaleidoscope"}, "lenses must be 'logit', 'tuned', a lens object"),
    ({"lenses": []}, "lenses is empty"),
    ({"lenses": ["tuned"]}, r"lenses: 'tuned' is the tuned lens glt ships for the model, and none ships for "
                            r"'tiny-llama': pass a lens object, e.g\. glt\.least_squares_lens\(model\)"),
    ({"lenses": ["logit", "logit"]}, "two lenses named 'logit'"),
    ({"targets": ["paris city"]}, r"targets\[0\]='paris city' is 2 tokens"),
    ({"targets": [101]}, r"targets\[0\] must be a token string or an id in \[0, 101\)"),
    ({"targets": [True]}, r"targets\[0\]"),
    ({"top_k": 0}, "top_k must be an int >= 1"),
    ({"color": "hue"}, "argument color must be"),
])
def test_explore_errors(tiny_llama, kw, match):
    kw = {"text": "the capital of france is", **kw}
    with pytest.raises(glt.GltError, match=match):
        glt.explore(tiny_llama, **kw)


@pytest.mark.integration
def test_explore_default_model_both_lenses(default_model):
    """The shipped tuned lens by name; a 64-token text with two lenses stays small (~170 kB)."""
    ids = default_model.tokenizer("The history of the city begins with a small settlement on the river. " * 8,
                                  add_special_tokens=False)["input_ids"][:63]
    ex = glt.explore(default_model, default_model.tokenizer.decode(ids), lenses=["logit", "tuned"], top_k=5)
    assert ex.lenses == ("logit", "tuned") and ex.n_positions == 64
    assert ex.n_layers == default_model.cfg.n_layers + 1 and ex.data["layers"][-1] == "final"
    assert len(ex.to_html().encode()) < 250_000
