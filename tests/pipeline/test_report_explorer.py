"""``glt study``'s report.html embeds the layer explorer of its heatmap text; report.md keeps the
static figure only (the page itself is checked in a browser in tests/browser)."""

import json
import re

import matplotlib

matplotlib.use("Agg")

from glt.pipeline._report import render_html, render_markdown  # noqa: E402
from glt.pipeline._run import StudyConfig, run_study  # noqa: E402
from glt.pipeline._specs import TextReadout  # noqa: E402
from tests.helpers import make_tiny_folder  # noqa: E402

_DATA = re.compile(r'<script type="application/json" class="glt-x-data">(.*?)</script>', re.S)


def test_html_blocks_go_to_the_html_report_only(tmp_path):
    blocks = [("h2", "Heatmap"), ("html", "<div class='glt-x'>view</div>"), ("p", "after")]
    assert "glt-x" not in render_markdown(blocks) and "after" in render_markdown(blocks)
    assert "<div class='glt-x'>view</div>" in render_html(blocks, tmp_path, "t")


def test_report_embeds_the_heatmap_explorer(tiny_root, tmp_path):
    text = "the capital of france is paris </script><script>alert(1)</script>"
    cfg = StudyConfig(model=str(make_tiny_folder("llama", tiny_root)), lenses=("logit",), heatmap_text=text)
    out = run_study(cfg, tmp_path / "study", stages=["heatmap"], progress=False)
    page, md = (out / "report.html").read_text(), (out / "report.md").read_text()
    assert "glt-x" not in md and "figures/heatmap_logit.png" in md
    assert "data:image/png;base64," in page  # the static figure stays in the page too
    [block] = _DATA.findall(page)
    assert "<" not in block and "</script><script>alert(1)" not in page
    data = json.loads(block)
    r = TextReadout.load(out / "data" / "heatmap_logit.json").readout
    assert [v["name"] for v in data["lenses"]] == ["logit"]
    assert (len(data["layers"]), len(data["positions"]), data["k"]) == (r.ranks.shape[0], r.n_rows, 3)
    assert data["title"] == f"Layer explorer of the heatmap text: {text}"
