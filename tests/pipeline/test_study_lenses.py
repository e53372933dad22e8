"""``glt study --lens logit,tuned,FOLDER``: several lenses from one forward pass per study."""

import json
import warnings

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

import glt  # noqa: E402
from glt.data._wikipedia import WIKI_SOURCE  # noqa: E402
from glt.lenses._jacobian import JacobianLens  # noqa: E402
from glt.pipeline._plan import plan_stages  # noqa: E402
from glt.pipeline._run import StudyConfig, run_study, study_config  # noqa: E402
from tests.helpers import assert_same_result  # noqa: E402

TINY_SIZES = {"gtr_texts": 4, "gtr_max_tokens": 12, "fact_items": 8, "freq_paragraphs": 20,
              "heatmap_text": "the capital of france is paris"}
STAGES = ["heatmap", "guess_refine", "facts", "early_exit"]


@pytest.fixture(scope="module")
def folders(tiny_root, tmp_path_factory):
    from tests.helpers import make_tiny_folder

    model_folder = make_tiny_folder("llama", tiny_root)
    model = glt.load_model(str(model_folder))
    out = tmp_path_factory.mktemp("lenses")
    gen = torch.Generator().manual_seed(2)
    tuned = glt.TunedLens.from_model(model)
    with torch.no_grad():
        for p in tuned.parameters():
            if p.requires_grad:
                p.add_(0.3 * torch.randn(p.shape, generator=gen))
    tuned.save(out / "tuned lens")  # a space in the path on purpose
    J = torch.eye(28) + 0.3 * torch.randn(3, 28, 28, generator=gen)
    JacobianLens.from_model(model, {"n_prompts": 5}).set_jacobian(J, residual_0="fitted").save(out / "jacobian")
    return model_folder, out / "tuned lens", out / "jacobian"


def _config(model_folder, lens, **kw) -> StudyConfig:
    cfg = study_config(model=str(model_folder), lens=lens, **kw)
    return StudyConfig.from_dict({**cfg.to_dict(), **TINY_SIZES})


def _data(out):
    return {p.name: p.read_bytes() for p in sorted((out / "data").iterdir()) if not p.name.startswith(".")}


def test_lens_items_names_and_folders(folders):
    model_folder, tuned, jacobian = folders
    cfg = study_config(model=str(model_folder), lens=f"logit,{tuned},{jacobian}")
    assert cfg.lenses == ("logit", "tuned", "jacobian") and cfg.lens_folders == (str(tuned), str(jacobian))
    cfg = study_config(model=str(model_folder), lens=["logit", "jacobian"], lens_path=str(jacobian))
    assert cfg.lenses == ("logit", "jacobian") and cfg.lens_folders == ()
    with pytest.raises(glt.GltError, match=r"names the lens \['tuned'\] more than once"):
        study_config(model=str(model_folder), lens=f"tuned,{tuned}")
    with pytest.raises(glt.GltError, match="both hold a jacobian lens"):
        study_config(model=str(model_folder), lens=f"logit,{jacobian}", lens_path=str(jacobian))


def test_three_lenses_share_forward_passes_and_equal_separate_runs(folders, tmp_path):
    model_folder, tuned, jacobian = folders
    cfg = _config(model_folder, f"logit,{tuned},{jacobian}")
    out = run_study(cfg, tmp_path / "all", stages=STAGES, progress=False)
    together = _data(out)
    separate: dict[str, bytes] = {}
    tokens_alone = {}
    for lens in ("logit", str(tuned), str(jacobian)):
        one = run_study(_config(model_folder, lens), tmp_path / f"one-{len(separate)}", stages=STAGES, progress=False)
        separate.update(_data(one))
        for t in (one / "timings").glob("guess_refine_*.json"):
            tokens_alone[t.stem] = json.loads(t.read_text())["forward_tokens"]
    assert together.keys() == separate.keys() and len(together) > 12
    for name in together:  # the same numbers, byte for byte, as three runs of one lens
        assert together[name] == separate[name], name
    # guess-then-refine ran the model once for the three lenses: their shares of the tokens add up to one run's
    recs = {n: json.loads((out / "timings" / f"guess_refine_{n}.json").read_text())
            for n in ("logit", "tuned", "jacobian")}
    assert sum(r["forward_tokens"] for r in recs.values()) == pytest.approx(tokens_alone["guess_refine_logit"], abs=2)
    assert recs["tuned"]["shared_with"] == ["guess_refine_logit", "guess_refine_jacobian"]
    prov = json.dumps(json.loads((out / "provenance.json").read_text()))
    assert f"tuned: --lens {tuned}" in prov and f"jacobian: --lens {jacobian}" in prov
    report = (out / "report.md").read_text()
    assert all(f"guess_refine_{n}" in report for n in ("logit", "tuned", "jacobian"))
    side = report.split("## Headline numbers, lens by lens", 1)[1].split("\n## ", 1)[0]
    assert "| study | task | measure | logit lens | tuned lens | jacobian lens |" in side
    rows = [r for r in side.splitlines() if r.startswith("| Guess-then-refine")]
    assert len(rows) == 3 and all(r.count("(N=") == 3 for r in rows)  # one value and N per lens
    assert (out / "figures" / "bucket_share_logit_vs_tuned_vs_jacobian.png").is_file()


def test_resume_runs_only_the_missing_lens(folders, tmp_path):
    model_folder, tuned, _ = folders
    cfg = _config(model_folder, f"logit,{tuned}")
    out = run_study(cfg, tmp_path / "s", stages=["guess_refine"], progress=False)
    before = _data(out)
    (out / "data" / "guess_refine_tuned.json").unlink()
    run_study(cfg, out, stages=["guess_refine"], resume=True, progress=False)
    assert _data(out) == before
    logit = json.loads((out / "timings" / "summary.json").read_text())["stages"]
    assert logit["guess_refine_logit"]["status"] == "resumed" and logit["guess_refine_tuned"]["status"] == "computed"
    assert "shared_with" not in logit["guess_refine_tuned"]


def test_a_manifest_written_before_lens_folders_existed_still_resumes(folders, tmp_path):
    model_folder, _, _ = folders
    cfg = _config(model_folder, "logit")
    out = run_study(cfg, tmp_path / "s", stages=["heatmap"], progress=False)
    manifest = out / "study.json"
    data = json.loads(manifest.read_text())
    del data["config"]["lens_folders"]  # as glt 0.2 wrote it
    manifest.write_text(json.dumps(data))
    run_study(cfg, out, stages=["heatmap"], resume=True, progress=False)
    stages = json.loads((out / "timings" / "summary.json").read_text())["stages"]
    assert stages["heatmap_logit"]["status"] == "resumed"  # kept, not silently recomputed



def _direct_split(model, lens, cfg, source):
    """`glt.sublayer_split` called by hand on what the study's sublayer stage reads."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*truncated from")
        ids = glt.tokenize(model, glt.wikipedia_paragraphs("heldout", max_paragraphs=cfg.gtr_texts), truncate=True)
    texts = glt.wikipedia_paragraphs("all", max_paragraphs=cfg.freq_paragraphs)
    freq = glt.TokenFrequency.from_texts(texts, model, corpus=WIKI_SOURCE, progress=False)
    return glt.sublayer_split(model, lens, [x[: cfg.gtr_max_tokens] for x in ids], frequency=freq,
                              max_positions=cfg.sublayer_positions, batch_size=cfg.batch_size, progress=False,
                              source=source)


def test_the_sublayer_stage_reads_with_the_logit_lens_whatever_the_study_lenses(folders, tmp_path):
    model_folder, tuned, _ = folders
    cfg = _config(model_folder, str(tuned))
    out = run_study(cfg, tmp_path / "s", stages=["sublayers"], progress=False)
    saved = glt.SublayerSplit.load(out / "data" / "sublayers.json")
    assert saved.lens == "logit" and saved.n_positions > 0
    model = glt.load_model(str(model_folder))
    assert_same_result(saved, _direct_split(model, None, cfg, saved.data_source))
    report = (out / "report.md").read_text()
    assert "## Inside a block: attention vs MLP" in report and "overturned by attention / by the MLP" in report
    assert (out / "figures" / "sublayers.png").is_file()


def test_the_sublayer_stage_also_reads_with_the_least_squares_lens_through_its_mid_translators(
        folders, tmp_path, monkeypatch):
    monkeypatch.setenv("GLT_CACHE", str(tmp_path / "cache"))
    model_folder, _, _ = folders
    cfg = _config(model_folder, "logit,least_squares")
    assert [s.name for s in plan_stages(cfg, ["sublayers"])] == [
        "sublayers", "sublayers_least_squares"]
    assert [s.name for s in plan_stages(_config(model_folder, "logit"), ["sublayers"])] == [
        "sublayers"]
    out = run_study(cfg, tmp_path / "s", stages=["sublayers"], progress=False)
    logit = glt.SublayerSplit.load(out / "data" / "sublayers.json")
    ls = glt.SublayerSplit.load(out / "data" / "sublayers_least_squares.json")
    assert logit.lens == "logit" and ls.lens == "least_squares" and ls.n_positions == logit.n_positions > 0
    model = glt.load_model(str(model_folder))
    lens = glt.least_squares_lens(model, resid_mid=True, log=lambda _: None, progress=False)
    assert lens.origin["reused"] and lens.reads_resid_mid  # the run cached the lens with its mid translators
    assert_same_result(ls, _direct_split(model, lens, cfg, ls.data_source))
    assert not torch.equal(ls.top1, logit.top1)  # the mid and boundary translators move the read-out
    assert (out / "figures" / "sublayers_least_squares.png").is_file()


def test_the_sublayer_stage_reads_with_a_tuned_lens_folder_saved_with_mid_translators(folders, tmp_path):
    model_folder, tuned, _ = folders
    model = glt.load_model(str(model_folder))
    lens = glt.load_lens(tuned, model)
    n, d = lens.weight.shape[0], lens.weight.shape[-1]
    gen = torch.Generator().manual_seed(5)
    lens.set_mid_translators(0.3 * torch.randn(n, d, d, generator=gen), 0.3 * torch.randn(n, d, generator=gen))
    lens.save(tmp_path / "with mid")
    cfg = _config(model_folder, f"logit,{tmp_path / 'with mid'}")
    assert [s.name for s in plan_stages(cfg, ["sublayers"])] == ["sublayers", "sublayers_tuned"]
    # a tuned lens folder without them (here the fixture's) adds no variant: it cannot read resid_mid
    assert [s.name for s in plan_stages(_config(model_folder, f"logit,{tuned}"), ["sublayers"])] == ["sublayers"]
    out = run_study(cfg, tmp_path / "s", stages=["sublayers"], progress=False)
    saved = glt.SublayerSplit.load(out / "data" / "sublayers_tuned.json")
    assert saved.lens == "tuned" and saved.n_positions > 0
    assert_same_result(saved, _direct_split(model, glt.load_lens(tmp_path / "with mid", model), cfg,
                                            saved.data_source))
