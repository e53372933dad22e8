"""The tutorial pages of the built docs site in a real browser (headless Chromium through selenium).

The site is the one ``tests/project/test_docs.py`` checks (the ``docs_site`` fixture builds it once a
run), served over HTTP from this machine; nothing is fetched from the network. The pages render the
notebooks as this run executed them (``after_notebooks``: these tests run after the notebooks; see
the root ``conftest.py``). Checked on the quickstart and the Guess-then-Refine page: the page loads
with no console error, every figure is an image that decoded (non-zero natural size), printed
numbers and tables are there; on the quickstart the layer explorer is live: its grid has one cell
per layer and position, hovering a cell shows its top-k, clicking draws the trajectory. Screenshots
go to ``$GLT_SCREENSHOTS`` (default ``/tmp/glt-screenshots``), ``docs-*.png``, for a failing run to
be inspected. A page without outputs (its notebook did not run in this session and has no current
executed copy) is skipped locally and fails in CI, naming the command that runs what it needs.
"""

import functools
import http.server
import threading

import pytest

from tests.browser.conftest import unavailable
from tests.browser.test_explorer_browser import console_errors, css, hover, shot

pytestmark = [pytest.mark.browser, pytest.mark.after_notebooks]

QUICKSTART, GTR = "01_quickstart", "02_guess_then_refine"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site_url(docs_site):
    if docs_site.returncode != 0:
        pytest.fail("the docs build failed (see tests/project/test_docs.py::test_mkdocs_build_strict):\n"
                    + docs_site.log[-3000:], pytrace=False)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=docs_site.path))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def open_tutorial(drv, docs_site, site_url: str, name: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    if "glt-no-outputs" in (docs_site.path / "tutorials" / name / "index.html").read_text("utf-8"):
        unavailable(f"the {name} page was built without outputs (its notebook did not run in this pytest run and "
                    "build/tutorials has no current copy)",
                    f"python -m pytest notebooks/{name}.ipynb tests/browser/test_docs_browser.py")
    drv.get_log("browser")  # drop what earlier pages logged
    drv.get(f"{site_url}/tutorials/{name}/")
    WebDriverWait(drv, 30).until(lambda d: d.execute_script(
        "return document.readyState === 'complete' && [...document.images].every(i => i.complete);"))
    shot(drv, f"docs-{name}-top")


def figures(drv) -> list[dict]:
    """Every image in the notebook's outputs: its natural size and whether it decoded."""
    return drv.execute_script(
        "return [...document.querySelectorAll('.jp-OutputArea-output img')].map(i => "
        "({w: i.naturalWidth, h: i.naturalHeight, ok: i.complete, src: i.src.slice(0, 30)}));")


def show(drv, element, name: str) -> None:
    drv.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    shot(drv, name)


def test_quickstart_page_shows_its_figure_and_a_live_explorer(browser, docs_site, site_url):
    from selenium.webdriver.support.ui import WebDriverWait

    open_tutorial(browser, docs_site, site_url, QUICKSTART)
    size = (docs_site.path / "tutorials" / QUICKSTART / "index.html").stat().st_size
    print(f"quickstart page: {size:,} bytes")
    figs = figures(browser)
    assert figs and all(f["ok"] and f["w"] > 0 and f["h"] > 0 for f in figs), figs
    assert all(f["src"].startswith("data:image/png") for f in figs), figs  # inline: the page stands alone
    show(browser, css(browser, ".jp-OutputArea-output img")[0], f"docs-{QUICKSTART}-figure")
    printed = "\n".join(e.text for e in css(browser, ".jp-OutputArea-output pre"))
    assert "final prediction:" in printed and "rank=" in printed and "blocks," in printed

    WebDriverWait(browser, 30).until(lambda d: d.execute_script(
        "const xs = [...document.querySelectorAll('.glt-x')];"
        "return xs.length === 1 && xs[0].getAttribute('data-glt-ready') === '1';"))
    assert css(browser, ".glt-x-nojs") == []  # the page script ran (it removes the no-JavaScript note)
    data = browser.execute_script("return JSON.parse(document.querySelector('.glt-x-data').textContent);")
    n_l, n_p = len(data["layers"]), len(data["positions"])
    assert [v["name"] for v in data["lenses"]] == ["logit", "tuned"] and n_l == 19 and n_p >= 5
    cells = css(browser, ".glt-x-cell")
    assert len(cells) == n_l * n_p  # one lens shown at a time
    assert all(c.size["width"] > 0 and c.size["height"] > 0 for c in cells[:: max(1, len(cells) // 10)])
    show(browser, css(browser, ".glt-x")[0], f"docs-{QUICKSTART}-explorer")

    last = css(browser, f'.glt-x-grid[data-lens="0"] .glt-x-cell[data-l="{n_l - 1}"][data-p="{n_p - 1}"]')[0]
    text = hover(browser, last)
    shot(browser, f"docs-{QUICKSTART}-explorer-hover")
    assert f"layer {n_l - 1}" in text or "final" in text, text
    assert "entropy" in text and "rank 1 (1 = top)" in text, text  # the final layer ranks its top-1 first
    last.click()
    traj = css(browser, ".glt-x-traj")[0]
    assert traj.is_displayed() and len(css(browser, ".glt-x-traj svg.glt-x-chart")) == 2
    show(browser, traj, f"docs-{QUICKSTART}-explorer-click")
    assert console_errors(browser) == []


def test_guess_then_refine_page_shows_figures_tables_and_numbers(browser, docs_site, site_url):
    open_tutorial(browser, docs_site, site_url, GTR)
    figs = figures(browser)
    assert len(figs) >= 3 and all(f["ok"] and f["w"] > 0 and f["h"] > 0 for f in figs), figs
    for i, img in enumerate(css(browser, ".jp-OutputArea-output img")[:3]):
        show(browser, img, f"docs-{GTR}-figure-{i}")
    tables = css(browser, ".jp-OutputArea-output table.dataframe")
    assert len(tables) >= 2 and all(len(t.find_elements("css selector", "tr")) > 2 for t in tables), len(tables)
    printed = "\n".join(e.text for e in css(browser, ".jp-OutputArea-output pre"))
    assert "read positions:" in printed and "final accuracy vs the gold next token:" in printed, printed[:2000]
    assert console_errors(browser) == []
