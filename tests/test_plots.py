"""Plot helpers: every figure renders (Agg) and the drawn data equal the result's data."""

import io

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

import glt  # noqa: E402
from glt._early_exit import early_exit  # noqa: E402
from glt._onsets import aggregate_onsets, compute_onsets  # noqa: E402
from glt._plots import (  # noqa: E402
    _cell_text,
    plot_onset_curves,
    plot_rank_curves,
    plot_side_by_side,
    plot_token_heatmap,
    rank_quantiles,
)
from glt._plots_studies import (  # noqa: E402
    plot_early_exit,
    plot_mc_decision,
    plot_mc_format,
    plot_multiple_choice,
    plot_patching,
)
from glt._style import category_colors, layer_tick_labels, safe_text, set_layer_axis  # noqa: E402


def render(fig) -> bytes:
    """Draw the figure to PNG (catches errors that only happen at draw time)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:4] == b"\x89PNG"
    return buf.getvalue()


def make_readout(n_layer=4, rows=((0, 0), (0, 1), (0, 2)), ranks=None, lens="logit", k=2):
    """A hand-built Readout: top-1 id of (layer, row) is 10 * layer + row, prob 0.1 * (layer + 1)."""
    n = len(rows)
    b = torch.tensor([r[0] for r in rows])
    p = torch.tensor([r[1] for r in rows])
    ids = torch.stack([torch.arange(n) + 10 * layer for layer in range(n_layer)])  # [layer, row]
    topk_ids = torch.stack([ids, ids + 1], -1)[..., :k]
    prob = torch.tensor([0.1 * (layer + 1) for layer in range(n_layer)])[:, None].expand(n_layer, n)
    topk_lp = torch.stack([prob.log(), (prob / 2).log()], -1)[..., :k]
    if ranks is None:
        ranks = torch.tensor([[5 * (n_layer - 1 - layer) + r for r in range(n)] for layer in range(n_layer)])
    labels = ("embed",) + tuple(f"resid_pre {i}" for i in range(1, n_layer - 1)) + ("final",)
    return glt.Readout(labels, b, p, torch.arange(n) + 100, ids[-1][:, None], ranks[..., None],
                       torch.zeros(n_layer, n, 1), topk_ids, topk_lp, torch.zeros(n_layer, n),
                       torch.zeros(n_layer, n), lens)


def legend_texts(ax) -> list[str]:
    """Texts of every legend on ``ax`` (the current one and any added as artists)."""
    from matplotlib.legend import Legend

    legends = [ax.get_legend(), *[a for a in ax.artists if isinstance(a, Legend)]]
    return [t.get_text() for leg in legends if leg is not None for t in leg.get_texts()]


# ------------------------------------------------------------------ style
def test_style_helpers():
    assert layer_tick_labels(3) == ["emb", "1", "2", "3"]
    assert len(set(category_colors(8))) == 8
    assert safe_text("a\n\u7684") == "a\\nU+7684"
    from matplotlib.figure import Figure

    ax = Figure().add_subplot()
    set_layer_axis(ax, 18)
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[0] == "emb" and labels[-1] == "18"
    ticks = ax.get_xticks()
    assert np.all(ticks == np.round(ticks)) and len(ticks) <= 13


# ------------------------------------------------------------------ rank curves
def test_rank_quantiles_match_numpy():
    r = np.array([[0, 10, 99], [3, 0, 1]])
    med, q25, q75 = rank_quantiles(r)
    np.testing.assert_allclose(med, np.median(r + 1, axis=1))
    np.testing.assert_allclose(q25, np.percentile(r + 1, 25, axis=1))
    np.testing.assert_allclose(q75, np.percentile(r + 1, 75, axis=1))


def test_rank_curves_from_mapping_data_equal():
    groups = {"DET": torch.tensor([[40, 9, 3], [3, 0, 0], [0, 0, 0]]),
              "NOUN": torch.tensor([[900, 50], [20, 10], [0, 0]])}
    fig = plot_rank_curves(groups)
    ax = fig.axes[0]
    assert [ln.get_label() for ln in ax.lines] == ["DET (N=3)", "NOUN (N=2)"]
    for line, r in zip(ax.lines, groups.values()):
        np.testing.assert_allclose(line.get_ydata(), np.median(r.numpy() + 1, axis=1))
        np.testing.assert_array_equal(line.get_xdata(), np.arange(3))
    # IQR band: the polygon's y-range per group equals [q25, q75] extremes
    band = ax.collections[0].get_paths()[0].vertices
    _, q25, q75 = rank_quantiles(groups["DET"])
    assert band[:, 1].min() == pytest.approx(q25.min()) and band[:, 1].max() == pytest.approx(q75.max())
    assert ax.get_yscale() == "log"
    render(fig)


def test_rank_curves_from_readout_and_labels():
    r = make_readout(rows=((0, 0), (0, 1), (1, 0), (1, 1)))
    fig = plot_rank_curves(r, ["a", "b", "a", "b"])
    lines = fig.axes[0].lines
    ranks = r.ranks[..., 0].numpy()
    np.testing.assert_allclose(lines[0].get_ydata(), np.median(ranks[:, [0, 2]] + 1, axis=1))
    np.testing.assert_allclose(lines[1].get_ydata(), np.median(ranks[:, [1, 3]] + 1, axis=1))
    assert lines[0].get_linestyle() == "--"  # logit lens dashed
    render(fig)


@pytest.mark.parametrize("data, labels", [
    ({"a": torch.zeros(3, 0, dtype=torch.long)}, None),
    ("not ranks", None),
    (make_readout(), ["a"]),
])
def test_rank_curves_bad_input(data, labels):
    with pytest.raises(glt.GltError):
        plot_rank_curves(data, labels)


# ------------------------------------------------------------------ onset curves
def _curves():
    ranks = torch.tensor([[9, 0, 50, 7], [0, 0, 4, 2], [4, 0, 0, 0], [0, 0, 0, 0]])
    return aggregate_onsets(compute_onsets(ranks, ks=(1, 5, 10)), ["x", "x", "y", "y"])


@pytest.mark.parametrize("kind", ["first", "stable", "both"])
@pytest.mark.parametrize("stat", ["mean", "median"])
def test_onset_curves_data_equal(kind, stat):
    curves = _curves()
    fig = plot_onset_curves(curves, kind=kind, stat=stat, n_layers=3)
    lines = fig.axes[0].lines
    drawn = [c for c in curves if kind == "both" or c.kind == kind]
    assert len(lines) == len(drawn)
    for line, c in zip(lines, drawn):
        np.testing.assert_allclose(line.get_xdata(), np.asarray(getattr(c, stat), float))
        np.testing.assert_array_equal(line.get_ydata(), c.ks)
        assert line.get_linestyle() == ("-" if c.kind == "first" else "--")
    labels = legend_texts(fig.axes[0])
    assert "x (N=2)" in labels and "y (N=2)" in labels
    render(fig)


def test_onset_curves_groups_and_errors():
    fig = plot_onset_curves(_curves(), groups=["y"], kind="first", band=True)
    assert len(fig.axes[0].lines) == 1
    for kw in ({"kind": "last"}, {"stat": "mode"}, {"groups": ["zzz"]}):
        with pytest.raises(glt.GltError):
            plot_onset_curves(_curves(), **kw)
    with pytest.raises(glt.GltError):
        plot_onset_curves(object())


# ------------------------------------------------------------------ heatmap
@pytest.mark.parametrize("color", ["prob", "rank"])
def test_token_heatmap_cells(color):
    r = make_readout(n_layer=3, rows=((0, 2), (0, 0), (0, 1)))  # rows out of position order
    words = {i: f"t{i}" for i in range(200)}
    words[21] = "\u7684\n"
    fig = plot_token_heatmap(r, tokenizer=lambda i: words[i], color=color)
    ax = fig.axes[0]
    img = np.asarray(ax.images[0].get_array())
    order = np.argsort(r.pos_index.numpy())
    expect = r.max_prob.numpy()[:, order] if color == "prob" else r.ranks[..., 0].numpy()[:, order] + 1.0
    np.testing.assert_allclose(img, expect, rtol=1e-6)
    texts = {(round(t.get_position()[0]), round(t.get_position()[1])): t.get_text() for t in ax.texts}
    top1 = r.top1.numpy()[:, order]
    for (x, y), s in texts.items():
        want = words[int(top1[y, x])]
        assert s == _cell_text(want, 7)
    assert texts[(0, 2)] == "U+7684\u2026"  # CJK escaped for the font, cut at 7 characters
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"t{i}" for i in r.input_ids.numpy()[order]]
    render(fig)


def test_token_heatmap_bad_input():
    with pytest.raises(glt.GltError):
        plot_token_heatmap(make_readout(), color="entropy")
    with pytest.raises(glt.GltError):
        plot_token_heatmap(make_readout(), batch=3)


# ------------------------------------------------------------------ side by side
def test_side_by_side_readouts():
    a, b = make_readout(lens="logit"), make_readout(lens="tuned")
    fig = plot_side_by_side(a, b)
    left, right = fig.axes[:2]
    assert left.get_title().startswith("logit lens") and right.get_title().startswith("tuned lens")
    np.testing.assert_allclose(left.lines[0].get_ydata(), rank_quantiles(a.ranks[..., 0])[0])
    assert right.lines[0].get_linestyle() == "-"
    render(fig)
    fig = plot_side_by_side(_curves(), _curves(), plot=plot_onset_curves, titles=["A", "B"])
    assert [ax.get_title() for ax in fig.axes[:2]] == ["A", "B"]
    with pytest.raises(glt.GltError):
        plot_side_by_side(a, _curves())
    with pytest.raises(glt.GltError):
        plot_side_by_side(object(), object())
