"""Plot helpers: every figure renders (Agg) and the drawn data equal the result's data."""

import io

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

import glt  # noqa: E402
from glt.decoding._onsets import aggregate_onsets, compute_onsets  # noqa: E402
from glt.plotting._curves import (  # noqa: E402
    _cell_text,
    plot_onset_curves,
    plot_rank_curves,
    plot_side_by_side,
    plot_token_heatmap,
    rank_quantiles,
)
from glt.plotting._style import category_colors, layer_tick_labels, safe_text, set_layer_axis  # noqa: E402
from glt.studies.early_exit import plot_early_exit  # noqa: E402
from glt.studies.early_exit._run import early_exit  # noqa: E402
from glt.studies.multiple_choice import (  # noqa: E402
    plot_mc_decision,
    plot_mc_format,
    plot_multiple_choice,
)
from glt.studies.patching import plot_patching  # noqa: E402


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
    for line, r in zip(ax.lines, groups.values(), strict=True):
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
    assert fig.axes[0].get_legend().get_title().get_text() == "logit lens"
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
    for line, c in zip(lines, drawn, strict=True):
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


def test_resid_mid_readouts_are_labelled_by_site_not_by_residual_index(tiny_llama):
    stack = glt.capture_residuals(tiny_llama, ["the capital of france is"], resid_mid=True)
    r = glt.readout(stack, glt.LogitLens.from_model(tiny_llama), top_k=1)
    ax = plot_token_heatmap(r).axes[0]
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks == ["emb", "mid 0", "1", "mid 1", "2", "mid 2", "final"]  # 7 rows: 2 n_layers + 1
    assert "mid i = inside block i" in ax.get_ylabel()
    ax = plot_rank_curves(r).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ticks
    plain = glt.readout(glt.capture_residuals(tiny_llama, ["the capital of france is"]),
                        glt.LogitLens.from_model(tiny_llama), top_k=1)
    assert [t.get_text() for t in plot_token_heatmap(plain).axes[0].get_yticklabels()] == ["emb", "1", "2", "3"]


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
    assert right.get_legend().get_title().get_text() == "tuned lens"
    render(fig)
    fig = plot_side_by_side(_curves(), _curves(), plot=plot_onset_curves, titles=["A", "B"])
    assert [ax.get_title() for ax in fig.axes[:2]] == ["A", "B"]
    with pytest.raises(glt.GltError):
        plot_side_by_side(a, _curves())
    with pytest.raises(glt.GltError):
        plot_side_by_side(object(), object())
    c = make_readout(lens="jacobian")
    fig = plot_side_by_side(a, b, c)  # one panel per lens
    assert [ax.get_title().split(":")[0] for ax in fig.axes[:3]] == ["logit lens", "tuned lens", "jacobian lens"]
    np.testing.assert_allclose(fig.axes[2].lines[0].get_ydata(), rank_quantiles(c.ranks[..., 0])[0])
    with pytest.raises(glt.GltError, match="same kind"):
        plot_side_by_side(a, b, _curves())
    with pytest.raises(glt.GltError, match="one title per panel"):
        plot_side_by_side(a, b, c, titles=["A", "B"])


# ------------------------------------------------------------------ study results (tiny model)
from glt.studies.fact_recall import plot_fact_onsets, plot_fact_ranks  # noqa: E402
from glt.studies.guess_then_refine import (  # noqa: E402
    plot_bucket_share,
    plot_flip_rate,
    plot_flip_split,
    plot_rank_by_bucket,
)
from glt.studies.part_of_speech import plot_pos_onsets, plot_pos_ranks  # noqa: E402
from tests.helpers import hand_built_fact_result  # noqa: E402

TEXTS = ["the city of paris is the capital of france and it is on a river",
         "he was in the city , she was not . they had been to the country",
         "the river is in france , which is a country . paris has a river"]


@pytest.fixture(scope="module")
def gtr(tiny_llama):
    from glt.data._frequency import TokenFrequency
    from glt.studies.guess_then_refine._run import run_guess_then_refine

    freq = TokenFrequency.from_texts(TEXTS * 3, tiny_llama, progress=False, edges=(5, 20, 60))
    return run_guess_then_refine(tiny_llama, glt.LogitLens.from_model(tiny_llama), TEXTS,
                                 frequency=freq, progress=False)


def bar_heights(container) -> np.ndarray:
    return np.array([p.get_height() for p in container.patches])


def test_bucket_share_bars_equal_shares(gtr):
    fig = plot_bucket_share(gtr)
    ax = fig.axes[0]
    share = gtr.bucket_share.numpy()
    assert len(ax.containers) == len(gtr.bucket_labels)
    for b, cont in enumerate(ax.containers):
        np.testing.assert_allclose(bar_heights(cont), share[:, b], atol=1e-12)
    stacked = sum(bar_heights(c) for c in ax.containers)
    np.testing.assert_allclose(stacked, 1.0)  # 100% stacked
    assert f"N={gtr.n_positions:,}" in ax.get_ylabel()
    render(fig)


@pytest.mark.parametrize("min_n", [1, 10])
def test_flip_rate_bars_equal_rates(gtr, min_n):
    fig = plot_flip_rate(gtr, min_n=min_n)
    rate, counts = gtr.flip_rate.numpy(), gtr.bucket_counts.numpy()
    for b, cont in enumerate(fig.axes[0].containers):
        want = np.where(counts[:, b] >= min_n, np.nan_to_num(rate[:, b]), 0.0)
        np.testing.assert_allclose(bar_heights(cont), want)
    labels = legend_texts(fig.axes[0])
    assert labels[0] == f"{gtr.bucket_labels[0]} (N={int(counts[:, 0].sum()):,})"
    render(fig)


def test_flip_split_equals_gold_split(gtr):
    from glt.studies.guess_then_refine._result import GOLD_CLASSES

    fig = plot_flip_split(gtr, min_n=1)
    split = gtr.gold_split.numpy().astype(float)
    order = ("right->right", "wrong->right", "right->wrong", "wrong->wrong")
    panels = [ax for ax in fig.axes if ax.containers]
    assert len(panels) == len(gtr.bucket_labels)
    for b, ax in enumerate(panels):
        tot = split[:, b].sum(-1)
        for cont, cls in zip(ax.containers, order, strict=True):
            want = np.where(tot >= 1, split[:, b, GOLD_CLASSES.index(cls)] / np.maximum(tot, 1), 0)
            np.testing.assert_allclose(bar_heights(cont), want)
    render(fig)


def test_rank_by_bucket(gtr):
    fig = plot_rank_by_bucket(gtr)
    final_b = gtr.bucket[-1].numpy()
    first = next(b for b in range(len(gtr.bucket_labels)) if (final_b == b).any())
    want = rank_quantiles(gtr.rank_final.numpy()[:, final_b == first])[0]
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), want)
    render(fig)


def test_side_by_side_default_for_gtr(gtr):
    fig = plot_side_by_side(gtr, gtr, titles=["logit", "tuned"])
    assert [ax.get_title() for ax in fig.axes[:2]] == ["logit", "tuned"]
    render(fig)


@pytest.fixture(scope="module")
def facts(tiny_llama):
    from glt.studies.fact_recall._run import run_fact_recall

    pairs = [("the capital of france is", "paris"), ("paris is a", "city"), ("the river is in", "france"),
             ("he was in the", "city , she"), ("they had been to the", "country .")]
    return run_fact_recall(tiny_llama, glt.LogitLens.from_model(tiny_llama), pairs, progress=False)


@pytest.mark.parametrize("outcome", ["correct", "incorrect"])
def test_fact_plots_equal_curves(outcome):
    facts = hand_built_fact_result()  # correct and incorrect tokens, 1- and 2-token answers
    fig = plot_fact_onsets(facts, outcome=outcome, kind="first")
    want = [c for c in facts.curves if c.group.split("/")[2] == outcome and c.kind == "first"]
    assert want, "the hand-built result has tokens of both outcomes"
    by_label = {ln.get_label().split(" (N=")[0]: ln for ln in fig.axes[0].lines}
    assert len(by_label) == len(want), (sorted(by_label), [c.group for c in want])
    for c in want:
        n, j, _ = c.group.split("/")
        line = by_label[f"n={n[3:]} token {int(j[3:]) + 1}"]
        np.testing.assert_allclose(line.get_xdata(), np.asarray(c.mean, float))
        np.testing.assert_array_equal(line.get_ydata(), c.ks)
    render(fig)
    render(plot_fact_ranks(facts, outcome=outcome))


def test_fact_plots_of_a_real_run_and_without_correct_tokens(facts):
    render(plot_fact_onsets(facts, outcome="incorrect"))  # the tiny model's run draws
    none_right = hand_built_fact_result(correct=(False,) * 4)
    for plot in (plot_fact_onsets, plot_fact_ranks):
        with pytest.raises(glt.GltError, match="no correct answer tokens in the result: try outcome='incorrect'"):
            plot(none_right, outcome="correct")


@pytest.fixture(scope="module")
def mc(tiny_llama):
    from glt.studies.multiple_choice._prompts import MCPrompt
    from glt.studies.multiple_choice._run import run_multiple_choice

    items = [MCPrompt(f"the capital of {w} is", ("paris", "city", "river"), ("paris", "city", "river"), i % 3,
                      id=str(i)) for i, w in enumerate(["france", "the country", "a city", "it"])]
    return run_multiple_choice(tiny_llama, glt.LogitLens.from_model(tiny_llama), items, progress=False)


@pytest.mark.parametrize("plot, measure", [
    (plot_mc_format, "option_mass"), (plot_mc_format, "format_inside"), (plot_mc_format, "format_rank"),
    (plot_mc_decision, "decision_agree"), (plot_mc_decision, "choice_prob"),
])
def test_mc_curves_equal_result_curves(mc, plot, measure):
    fig = plot(mc, measure=measure, groups=("all",))
    df = mc.curves()
    d = df[(df["measure"] == measure) & (df["group"] == "all") & (df["run"] == "main")].sort_values("layer")
    stat = "mean" if measure in ("format_inside", "decision_agree") else "median"
    want = d[stat].to_numpy(float) + (1.0 if measure == "format_rank" else 0.0)
    line = fig.axes[0].lines[0]
    np.testing.assert_allclose(line.get_ydata(), want)
    assert line.get_label() == f"all (N={mc.n_items})"
    render(fig)


def test_mc_two_panels_and_errors(mc):
    fig = plot_multiple_choice(mc)
    assert len(fig.axes) == 2
    render(fig)
    with pytest.raises(glt.GltError):
        plot_mc_format(mc, measure="vibes")


def test_early_exit_tradeoff_equals_result():
    r = make_readout(n_layer=4, rows=((0, 0), (0, 1), (0, 2), (1, 0)))
    res = early_exit(r, gold=[20, 31, -1, 33], categories=["a", "b", "a", "b"], taus=(0.1, 0.25, 0.5))
    fig = plot_early_exit(res)
    lines = fig.axes[0].lines
    for gi, g in enumerate(res.groups):
        line = next(ln for ln in lines if ln.get_label().startswith(f"{g} (N="))
        np.testing.assert_allclose(line.get_xdata(), res.tau_saved[gi].numpy())
        np.testing.assert_allclose(line.get_ydata(), res.tau_agreement[gi].numpy())
    fixed = next(ln for ln in lines if ln.get_label().startswith("fixed"))
    np.testing.assert_allclose(fixed.get_ydata(), res.fixed_agreement[res.groups.index("all")].numpy())
    render(fig)
    fig = plot_early_exit(res, metric="accuracy", groups=["all"])
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), res.tau_accuracy[-1].numpy())
    render(fig)
    for kw in ({"metric": "speed"}, {"groups": ["zzz"]}):
        with pytest.raises(glt.GltError):
            plot_early_exit(res, **kw)


def test_patching_transition_equals_result(tiny_llama):
    from glt.studies.patching._run import patch_layers

    res = patch_layers(tiny_llama, ["the capital of france is", "a city on the river"],
                       ["he was in the city", "she had been to paris"], target_options=[5, 6],
                       source_options=[7, 8], progress=False)
    fig = plot_patching(res)
    lines = fig.axes[0].lines
    np.testing.assert_allclose(lines[0].get_ydata(), res.lands_on_source.float().mean(0).numpy())
    np.testing.assert_allclose(lines[1].get_ydata(), res.p_source.mean(0).numpy(), rtol=1e-6)
    np.testing.assert_allclose(lines[2].get_ydata(), res.p_target.mean(0).numpy(), rtol=1e-6)
    np.testing.assert_array_equal(lines[0].get_xdata(), res.layers)
    assert "N=2" in lines[0].get_label()
    render(fig)


def test_pos_plots_equal_curves(tiny_llama):
    from glt.studies.part_of_speech._run import run_pos_study

    res = run_pos_study(tiny_llama, glt.LogitLens.from_model(tiny_llama),
                        ["The city of Paris is the capital of France. It is on a river.",
                         "He was in the city, and she was not in the country."] * 2,
                        tags=("DET", "NOUN", "ADP"), min_prefix_chars=0, progress=False)
    subset = "correct" if any(c.group.startswith("correct/") for c in res.curves) else "all"
    fig = plot_pos_onsets(res, kind="first")
    for line in fig.axes[0].lines:
        tag = line.get_label().split(" (N=")[0]
        c = res.curve(tag, subset=subset, kind="first")
        np.testing.assert_allclose(line.get_xdata(), np.asarray(c.mean, float))
    render(fig)
    fig = plot_pos_ranks(res, subset="all")
    tags = np.array([it.tag for it in res.items])
    first = fig.axes[0].lines[0]
    tag = first.get_label().split(" (N=")[0]
    np.testing.assert_allclose(first.get_ydata(), rank_quantiles(res.ranks.numpy()[:, tags == tag])[0])
    render(fig)
