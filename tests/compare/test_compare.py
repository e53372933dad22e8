"""``glt compare`` on two small saved runs of tiny models with 2 and 3 layers.

The overlay points are checked against each run's own saved numbers (layer i of an n-layer run at
depth i / n exactly); differences between runs (settings, glt version, missing or failed stages)
are listed; folders that are not studies, damaged results and bad run lists raise GltError.
"""

import json
import math
import shutil
from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

import glt  # noqa: E402
from glt.cli._main import main  # noqa: E402
from glt.compare import Comparison, compare_runs, load_study_run, plot_comparison  # noqa: E402
from glt.pipeline._run import StudyConfig, run_study  # noqa: E402
from glt.studies.early_exit import EarlyExitResult  # noqa: E402
from glt.studies.fact_recall import FactRecallResult  # noqa: E402
from glt.studies.guess_then_refine import GuessRefineResult  # noqa: E402
from glt.studies.multiple_choice import MultipleChoiceResult  # noqa: E402
from tests.helpers import make_tiny_folder  # noqa: E402

SIZES = {"gtr_max_tokens": 12, "fact_items": 8, "freq_paragraphs": 20, "mc_items": 4, "mc_shots": 0}
STAGES = ["guess_refine", "facts", "early_exit", "mc"]  # mc fails on the tiny tokenizer: a failed stage
FIXTURE_RUN = Path(__file__).resolve().parents[1] / "fixtures" / "v0_1_0" / "study"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_root):
    """Two tiny-llama runs: 2 layers with 4 guess-then-refine texts, 3 layers with 5."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for n, texts in ((2, 4), (3, 5)):
        folder = make_tiny_folder("llama", tiny_root, n_layers=n)
        cfg = StudyConfig(model=str(folder), lenses=("logit",), gtr_texts=texts, **SIZES)
        out[n] = run_study(cfg, root / f"run{n}", stages=STAGES, progress=False)
    return out


def same(a, b) -> bool:
    """Equal tuples of floats, NaN equal to NaN."""
    return len(a) == len(b) and all((math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a, b, strict=True))


def test_overlay_points_are_the_runs_own_numbers(runs):
    cmp = compare_runs([runs[2], runs[3]])
    assert [s.n_layers for s in cmp.series] == [2, 3]
    for s, n in zip(cmp.series, (2, 3), strict=True):
        assert f"({n} layers)" in s.label and s.lens == "logit"
        gtr = GuessRefineResult.load(runs[n] / "data" / "guess_refine_logit.json")
        depth = tuple(i / n for i in range(n + 1))
        for b, bucket in enumerate(gtr.bucket_labels):
            share = cmp.curve("guess_refine", "bucket_share", bucket, s.label)
            assert share.x == depth and share.layers == tuple(range(n + 1))  # exactly i / n
            assert share.y == tuple(float(v) for v in gtr.bucket_share[:, b])
            assert share.n_total == gtr.n_positions
            flip = cmp.curve("guess_refine", "flip_rate", bucket, s.label)
            assert same(flip.y, tuple(float(v) for v in gtr.flip_rate[:, b]))
            assert flip.n == tuple(gtr.bucket_counts[:, b].tolist())
        ee = EarlyExitResult.load(runs[n] / "data" / "early_exit_logit.json")
        gi = ee.groups.index("all")
        settled = cmp.curve("early_exit", "settled_share", "all", s.label)
        assert settled.x == depth and settled.y[-1] == 1.0
        assert settled.y == tuple(float(v) for v in ee.onset_hist[gi].double().cumsum(0) / ee.n[gi])
        trade = cmp.curve("early_exit", "exit_tradeoff", "all", s.label)
        assert trade.x == tuple(float(v) for v in ee.tau_saved[gi]) and len(trade.x) == len(ee.taus)
        facts = FactRecallResult.load(runs[n] / "data" / "facts_logit.json")
        outcome = "correct" if bool(facts.correct.any()) else "incorrect"
        for c in facts.curves:
            length, j, kept = c.group.split("/")
            if kept != outcome:
                continue
            got = cmp.curve("facts", f"onset_{c.kind}", f"n={length[3:]} token {int(j[3:]) + 1}", s.label)
            assert same(got.x, tuple(m / n for m in c.mean)) and got.y == tuple(float(k) for k in c.ks)
            assert got.n == c.n_crossed and got.note == f"{outcome} answer tokens"


def test_headlines_and_differences(runs):
    cmp = compare_runs([runs[2], runs[3]])
    labels = [s.label for s in cmp.series]
    assert {h.series for h in cmp.headlines} == set(labels)
    assert {h.study for h in cmp.headlines} == {"Guess-then-refine", "Fact recall", "Early exit"}
    text = "\n".join(cmp.differences)
    assert "setting gtr_texts: run2 4; run3 5" in text  # different task settings: listed
    assert any("gtr_texts" in d for d in cmp.study_differences["guess_refine"])
    assert not any("gtr_texts" in d for d in cmp.study_differences["facts"])
    assert "Multiple choice is missing from" in text and "mc_mmlu_logit failed: all 4 items were skipped" in text
    assert "Activation patching is missing from" in text and "patching_logit not run" in text
    assert "glt version" not in text


def test_same_run_twice_in_two_folders_differs_in_nothing(runs, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(runs[3], copy)
    cmp = compare_runs([load_study_run(runs[3]), copy])  # loaded runs and folders mix
    assert len({s.label for s in cmp.series}) == 2 and all("[" in s.label for s in cmp.series)
    assert not [d for d in cmp.differences if "missing" not in d]
    a, b = cmp.series
    for c in cmp.select("guess_refine", "bucket_share"):
        if c.series == a.label:
            assert cmp.curve("guess_refine", "bucket_share", c.group, b.label).y == c.y


def test_a_run_of_glt_0_1_0_and_a_missing_stage_are_listed(runs, tmp_path):
    """The glt 0.1.0 fixture run (heatmap and early exit only, other sizes) loads and compares."""
    cmp = compare_runs([runs[3], FIXTURE_RUN])
    text = "\n".join(cmp.differences)
    assert "setting gtr_texts: run3 5; study 6" in text and "setting quick: run3 False; study True" in text
    assert "Guess-then-refine is missing from" in text and "guess_refine_logit not run" in text
    have = {c.series for c in cmp.select("early_exit", "settled_share")}
    assert len(have) == 2  # both runs have early exit: both drawn
    assert len({c.series for c in cmp.select("guess_refine", "bucket_share")}) == 1  # one run lacks it
    newer = tmp_path / "newer"
    shutil.copytree(runs[2], newer)
    manifest = json.loads((newer / "study.json").read_text())
    manifest["glt"] = "9.9.9"
    manifest["config"]["gtr_sampler"] = "future"  # a setting this glt does not know
    (newer / "study.json").write_text(json.dumps(manifest))
    text = "\n".join(compare_runs([runs[2], newer]).differences)
    assert f"glt version: run2 {glt.__version__}; newer 9.9.9" in text
    assert "setting gtr_sampler: run2 (not recorded); newer future (unknown to this glt in newer: ignored)" in text


def _fake_mc(n_layers: int) -> MultipleChoiceResult:
    """A multiple-choice result with distinct values per layer (the tiny tokenizer cannot run one)."""
    g = torch.Generator().manual_seed(7)
    n_l, n_i, n_o = n_layers + 1, 5, 2
    logp = torch.log_softmax(torch.randn(n_l, n_i, n_o + 3, generator=g), -1)[..., :n_o]
    ranks = torch.randint(0, 50, (n_l, n_i, n_o), generator=g)
    return MultipleChoiceResult(
        task="sst2", model="tiny-llama", lens="logit", source="hand-built", n_shots=0, top_k_format=10,
        symbols_mode="original", layer_labels=("embed",) + tuple(f"resid_pre {i}" for i in range(1, n_layers))
        + ("final",), item_ids=tuple(f"i{i}" for i in range(n_i)), symbols=(("neg", "pos"),) * n_i,
        multi_token_symbols=(), option_tokens=torch.tensor([[5, 6]] * n_i), content_tokens=torch.tensor([[7, 8]] * n_i),
        gold=torch.tensor([0, 1, 0, 1, 1]), option_ranks=ranks, option_logprobs=logp, content_ranks=ranks + 3,
        content_logprobs=logp - 1.0, final_top1=torch.tensor([5, 6, 6, 5, 9]))


def test_multiple_choice_curves_are_the_results_own_table(runs, tmp_path):
    copy = tmp_path / "with-mc"
    shutil.copytree(runs[3], copy)
    res = _fake_mc(3)
    res.save(copy / "data" / "mc_sst2_logit.json")
    cmp = compare_runs([runs[2], copy])
    label = cmp.series[1].label
    table = res.curves()
    table = table[(table["run"] == "main") & (table["group"] == "all")]
    for measure, stat in (("option_mass", "median"), ("decision_agree", "mean")):
        c = cmp.curve("mc", measure, "sst2", label)
        rows = table[table["measure"] == measure].sort_values("layer")
        assert c.x == (0.0, 1 / 3, 2 / 3, 1.0) and c.y == tuple(float(v) for v in rows[stat])
        assert c.n == (5,) * 4 and c.n_total == 5
    assert not cmp.select("mc", "option_mass")[0].series == cmp.series[0].label  # the 2-layer run failed
    fig = plot_comparison(cmp, study="mc", measure="decision_agree")
    assert len(fig.axes[0].lines) == 1 and "(3 layers)" in fig.axes[0].lines[0].get_label()


def test_plot_legend_has_layer_count_and_n(runs):
    cmp = compare_runs([runs[2], runs[3]])
    fig = plot_comparison(cmp, study="guess_refine", measure="bucket_share", groups=["Top 1-10"])
    lines = fig.axes[0].lines
    assert len(lines) == 2
    for line, s in zip(lines, cmp.series, strict=True):
        assert f"({s.n_layers} layers)" in line.get_label() and "(N=" in line.get_label()
        assert tuple(line.get_xdata()) == tuple(i / s.n_layers for i in range(s.n_layers + 1))
    with pytest.raises(glt.GltError, match="measure must be one of"):
        plot_comparison(cmp, study="guess_refine", measure="bucket_shares")
    with pytest.raises(glt.GltError, match="no pos/onset_first curves"):
        plot_comparison(cmp, study="pos", measure="onset_first")


def test_cli_writes_report_figures_and_data(runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", str(runs[2]), str(runs[3]), "--out", str(out)]) == 0
    assert "report:" in capsys.readouterr().out
    md = (out / "report.md").read_text()
    assert md.index("## Differences between the runs") < md.index("## Series") < md.index("## Headline numbers")
    assert "setting gtr_texts" in md and "Settings that differ for this study" in md
    for name in ("guess_refine_bucket_share", "guess_refine_flip_rate", "early_exit", "facts_onsets"):
        assert (out / "figures" / f"{name}.png").is_file() and (out / "figures" / f"{name}.svg").is_file(), name
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(list((out / "figures").glob("*.png")))
    cmp = Comparison.load(out / "comparison.json")
    fresh = compare_runs([runs[2], runs[3]])
    assert cmp.series == fresh.series and cmp.differences == fresh.differences
    assert all(same(a.y, b.y) and same(a.x, b.x) and a.n == b.n for a, b in zip(cmp.curves, fresh.curves, strict=True))
    import pandas as pd

    table = pd.read_csv(out / "data" / "overlay.csv")
    assert len(table) == sum(len(c.x) for c in fresh.curves)
    row = table[(table["measure"] == "bucket_share") & (table["n_layers"] == 2) & (table["layer"] == 1)].iloc[0]
    assert row["x"] == 0.5
    # a second comparison into the same folder rewrites it; a foreign folder is refused
    assert main(["compare", str(runs[2]), str(runs[3]), "--out", str(out)]) == 0
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["compare", str(runs[2]), str(runs[3]), "--out", str(other)]) == 2
    assert "holds no glt comparison" in capsys.readouterr().err


def _damaged(runs, tmp_path, what: str) -> Path:
    copy = tmp_path / what
    shutil.copytree(runs[2], copy)
    if what == "truncated":
        f = copy / "data" / "facts_logit.json"
        f.write_bytes(f.read_bytes()[:200])
    elif what == "no-results":
        for f in (copy / "data").glob("*.json"):
            f.unlink()
    elif what == "bad-manifest":
        (copy / "study.json").write_text(json.dumps({"format": "glt.Readout", "version": 1}))
    elif what == "mixed-layers":
        shutil.copy(runs[3] / "data" / "facts_logit.json", copy / "data" / "facts_logit.json")
    return copy


@pytest.mark.parametrize("what, match", [
    ("truncated", "stage facts_logit"),
    ("no-results", "holds no finished stage"),
    ("bad-manifest", "is not a glt study manifest"),
    ("mixed-layers", "mixes runs of different models"),
])
def test_damaged_runs_raise(runs, tmp_path, what, match):
    with pytest.raises(glt.GltError, match=match):
        compare_runs([runs[3], _damaged(runs, tmp_path, what)])


def test_bad_run_lists_raise(runs, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    for bad, match in (([runs[2]], "two or more"), (str(runs[2]), "two or more"),
                       ([runs[2], runs[2]], "more than once"), ([runs[2], tmp_path / "empty"], "is not a glt study"),
                       ([runs[2], tmp_path / "nope"], "is not a folder"),
                       ([runs[2], tmp_path / "file.txt"], "is not a folder")):
        with pytest.raises(glt.GltError, match=match):
            compare_runs(bad)
    with pytest.raises(glt.GltError, match="one of the runs compared"):
        compare_runs([runs[2], runs[3]], out=runs[3])


def test_a_run_with_the_sublayer_stage_has_the_models_layer_count(tmp_path, tiny_root):
    """The sublayer stage's results hold 2 n + 1 residuals (mid residuals between blocks): the run
    still counts n layers, so it compares with others."""
    folder = make_tiny_folder("llama", tiny_root, n_layers=3)
    cfg = StudyConfig(model=str(folder), lenses=("logit",), gtr_texts=3, **SIZES)
    out = run_study(cfg, tmp_path / "run", stages=["guess_refine", "sublayers"], progress=False)
    run = load_study_run(out)
    assert run.n_layers == 3 and len(run.results["sublayers"].layer_labels) == 7
    twin = shutil.copytree(out, tmp_path / "twin")
    assert len(compare_runs([out, twin]).series) == 2
