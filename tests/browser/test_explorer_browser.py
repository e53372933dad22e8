"""The layer explorer in a real browser: headless Chromium (Debian's chromium + chromium-driver)
driven by selenium opens a saved explorer and a ``glt study`` report.html.

Checked: the page loads with no console error, the grid has one cell per layer and position (per
page), hovering a cell shows its top-k, clicking shows the trajectory, typing a token adds its
trajectory, lenses switch, long texts page, and a ``<script>`` in the text or in token strings
does not run and shows as text. Screenshots of every step go to ``$GLT_SCREENSHOTS`` (default
``/tmp/glt-screenshots``) for a failing run to be inspected. Without Chromium the tier is skipped
locally and fails in CI (``CI=true``): ``.ci/run`` installs it (the ``browser`` fixture is in
``tests/browser/conftest.py``).
"""

import os
import time
from pathlib import Path

import pytest
import torch

import glt
from glt.plotting._explorer import visible_token
from tests.helpers import make_tiny_folder, synthetic_readout

pytestmark = pytest.mark.browser

SHOTS = Path(os.environ.get("GLT_SCREENSHOTS", "/tmp/glt-screenshots"))
EVIL = "<script>window.__pwned=1</script>"
TEXT = "the capital of france is paris"


def shot(drv, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    drv.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


def console_errors(drv) -> list[str]:
    return [e["message"] for e in drv.get_log("browser") if e["level"] == "SEVERE"]


def open_page(drv, path: Path, name: str) -> float:
    """Load ``path``, wait until every explorer on it has drawn; return the seconds it took."""
    from selenium.webdriver.support.ui import WebDriverWait

    drv.get_log("browser")  # drop what earlier pages logged
    t0 = time.perf_counter()
    drv.get(path.as_uri())
    WebDriverWait(drv, 30).until(lambda d: d.execute_script(
        "const xs = [...document.querySelectorAll('.glt-x')];"
        "return xs.length > 0 && xs.every(x => x.getAttribute('data-glt-ready') === '1');"))
    took = time.perf_counter() - t0
    shot(drv, f"{name}-loaded")
    assert console_errors(drv) == []
    return took


def css(drv, selector: str) -> list:
    from selenium.webdriver.common.by import By

    return drv.find_elements(By.CSS_SELECTOR, selector)


def hover(drv, element) -> str:
    """Move the mouse onto ``element``; return the tooltip's text."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import WebDriverWait

    drv.execute_script("arguments[0].scrollIntoView({block: 'center', inline: 'center'})", element)
    ActionChains(drv).move_to_element(element).perform()
    tip = css(drv, ".glt-x-tip")[0]
    WebDriverWait(drv, 10).until(lambda d: tip.is_displayed())
    return tip.text


def cell(drv, layer: int, pos: int, lens: int = 0):
    return css(drv, f'.glt-x-grid[data-lens="{lens}"] .glt-x-cell[data-l="{layer}"][data-p="{pos}"]')[0]


@pytest.fixture(scope="module")
def tiny_reads(tiny_llama):
    stack = glt.capture_residuals(tiny_llama, [TEXT])
    logit = glt.readout(stack, glt.LogitLens.from_model(tiny_llama), top_k=4)
    tuned = glt.TunedLens.from_model(tiny_llama)
    with torch.no_grad():
        tuned.weight.normal_(0.0, 0.2)  # a lens that differs from the logit lens
    return {"logit": logit, "tuned": glt.readout(stack, tuned, top_k=4)}


def test_explorer_hover_click_track_and_switch(browser, tiny_reads, tiny_llama, tmp_path):
    ex = glt.Explorer.from_readouts(tiny_reads, tokenizer=tiny_llama.tokenizer)
    path = ex.save(tmp_path / "explorer.html")
    open_page(browser, path, "explorer")
    n_l, n_p = ex.n_layers, ex.n_positions
    assert len(css(browser, ".glt-x-cell")) == n_l * n_p  # one lens shown, every position on one page
    assert len(css(browser, ".glt-x-rowh")) == n_l + 1 and "embed" in css(browser, ".glt-x-rowh")[n_l - 1].text

    r, layer, pos = tiny_reads["logit"], 1, 3
    text = hover(browser, cell(browser, layer, pos))
    shot(browser, "explorer-hover")
    top = [visible_token(tiny_llama.tokenizer.decode([int(i)])) for i in r.topk_ids[layer, pos]]
    for tok in top:
        assert tok in text
    assert f"layer {layer}" in text and f"rank {int(r.ranks[layer, pos, 0]) + 1} (1 = top)" in text
    assert f"entropy {float(r.entropy[layer, pos]):.2f}" in text and "KL(final" in text

    cell(browser, layer, pos).click()
    traj = css(browser, ".glt-x-traj")[0]
    assert traj.is_displayed() and f"Position {int(r.pos_index[pos])}" in traj.text
    assert len(css(browser, ".glt-x-traj svg.glt-x-chart")) == 2  # rank and probability
    assert len(css(browser, ".glt-x-traj circle.glt-x-pt")) == 2 * n_l  # the final top-1, exact at every layer
    assert len(css(browser, ".glt-x-sel")) >= n_l  # the chosen column is outlined
    shot(browser, "explorer-click")

    other = top[1]  # in the top-k at this layer: its trajectory has at least that point
    box = css(browser, ".glt-x-pickin")[0]
    box.send_keys(other.replace("\u2423", " ") + "\n")
    keys = css(browser, ".glt-x-keys > div")
    assert any(f"\u201C{other}\u201D" in k.text for k in keys), [k.text for k in keys]
    assert len(css(browser, ".glt-x-traj circle.glt-x-pt")) > 2 * n_l
    shot(browser, "explorer-track")

    box = css(browser, ".glt-x-pickin")[0]
    box.send_keys("zzz-not-a-token\n")
    assert "is not a stored token" in css(browser, ".glt-x-traj")[0].text

    [both] = [b for b in css(browser, ".glt-x-btn") if b.text == "all lenses"]
    both.click()
    assert len(css(browser, ".glt-x-cell")) == 2 * n_l * n_p
    hover(browser, cell(browser, 2, 1, lens=1))
    [tuned] = [b for b in css(browser, ".glt-x-btn") if b.text == "tuned lens"]
    tuned.click()
    assert len(css(browser, ".glt-x-cell")) == n_l * n_p and "tuned lens" in hover(browser, cell(browser, 0, 0, lens=1))
    from selenium.webdriver.support.ui import Select

    Select(css(browser, ".glt-x-bar select")[0]).select_by_value("kl")
    assert "KL(final" in css(browser, ".glt-x-legend")[0].text
    shot(browser, "explorer-lenses")
    assert console_errors(browser) == []


def test_injected_script_does_not_run(browser, tiny_llama, tmp_path):
    text = f'the capital {EVIL} <img src=x onerror="window.__pwned=2"> is paris'
    path = glt.explore(tiny_llama, text, targets=["paris"], top_k=3).save(tmp_path / "evil.html")
    open_page(browser, path, "injection-text")
    assert browser.execute_script("return window.__pwned") is None
    assert EVIL in css(browser, ".glt-x-title")[0].text  # shown as text

    evil = [EVIL, "</script><script>window.__pwned=3</script>", "<!--", '"><img src=x onerror=window.__pwned=4>',
            "a&amp;b", " ", "\n"]
    r = synthetic_readout(n_layer=3, n_pos=len(evil), k=2, vocab=len(evil))
    r = glt.Readout(**{**{f: getattr(r, f) for f in ("layer_labels", "batch_index", "pos_index", "targets", "ranks",
                                                      "target_logprobs", "topk_ids", "topk_logprobs", "entropy",
                                                      "kl_to_final", "lens")},
                       "input_ids": torch.arange(len(evil))})
    path = glt.Explorer.from_readouts(r, tokenizer=lambda i: evil[i], title=EVIL).save(tmp_path / "evil-tokens.html")
    open_page(browser, path, "injection-tokens")
    assert browser.execute_script("return window.__pwned") is None
    strip = css(browser, ".glt-x-text")[0].text
    assert EVIL in strip and "</script><script>window.__pwned=3</script>" in strip and "\u2423" in strip
    assert css(browser, ".glt-x-title")[0].text == EVIL and browser.title == EVIL
    hover(browser, cell(browser, 0, 0))
    shot(browser, "injection-tokens-hover")
    assert browser.execute_script("return window.__pwned") is None and console_errors(browser) == []


def test_long_text_is_paged(browser, tmp_path):
    r = synthetic_readout(n_layer=19, n_pos=1000, k=5, vocab=50_021)
    ex = glt.Explorer.from_readouts(r, tokenizer=lambda i: f"w{i}")
    path = ex.save(tmp_path / "long.html")
    took = open_page(browser, path, "long")
    print(f"1,000-token explorer: {path.stat().st_size:,} bytes, drawn in {took:.2f} s")
    assert took < 20  # generous for a loaded CI machine; about a second on an idle one
    assert len(css(browser, ".glt-x-cell")) == 19 * 64
    label = css(browser, ".glt-x-pagelabel")[0]
    assert "positions 1\u201364 of 1000" in label.text
    [nxt] = [b for b in css(browser, ".glt-x-btn") if b.text == "\u25B6"]
    t0 = time.perf_counter()
    nxt.click()
    assert "positions 65\u2013128 of 1000" in css(browser, ".glt-x-pagelabel")[0].text
    print(f"next page drawn in {time.perf_counter() - t0:.2f} s")
    assert len(css(browser, ".glt-x-cell")) == 19 * 64
    far = css(browser, '.glt-x-tok[data-p="900"]')[0]
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", far)
    far.click()
    assert "positions 897\u2013960 of 1000" in css(browser, ".glt-x-pagelabel")[0].text
    assert "Position 900" in css(browser, ".glt-x-traj")[0].text
    assert f"w{int(r.topk_ids[5, 900, 0])}" in hover(browser, cell(browser, 5, 900))
    shot(browser, "long-page-15")
    assert console_errors(browser) == []


def test_study_report_embeds_the_explorer(browser, tiny_root, tmp_path):
    from glt.pipeline._run import StudyConfig, run_study
    from glt.pipeline._specs import TextReadout

    text = f"the capital of france {EVIL} is paris"
    cfg = StudyConfig(model=str(make_tiny_folder("llama", tiny_root)), lenses=("logit",), heatmap_text=text)
    out = run_study(cfg, tmp_path / "study", stages=["heatmap"], progress=False)
    md = (out / "report.md").read_text()
    assert "glt-x" not in md and "figures/heatmap_logit.png" in md  # report.md keeps the static figure only
    open_page(browser, out / "report.html", "report")
    res = TextReadout.load(out / "data" / "heatmap_logit.json")
    n_l, n_p = res.readout.ranks.shape[:2]
    assert len(css(browser, ".glt-x-cell")) == n_l * n_p
    assert len(css(browser, "figure img")) >= 1  # the static heatmap stays
    assert browser.execute_script("return window.__pwned") is None and EVIL in css(browser, ".glt-x-title")[0].text
    text = hover(browser, cell(browser, n_l - 1, n_p - 1))
    assert "final top-1" in text and "top-3" not in text and len(css(browser, ".glt-x-tip tr")) == 3  # top_k=3
    cell(browser, n_l - 1, n_p - 1).click()
    assert len(css(browser, ".glt-x-traj svg.glt-x-chart")) == 2
    shot(browser, "report-click")
    assert console_errors(browser) == []
