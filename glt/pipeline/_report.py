"""The study report: figures (PNG + SVG), ``report.md`` and a self-contained ``report.html``.

The report is built from a list of blocks (headings, paragraphs, tables, figures) rendered twice:
as Markdown linking ``figures/*.png``, and as one HTML file with every figure embedded as a
base64 PNG, so it can be mailed or opened offline. It states the headline numbers with their
Ns, the model / lens / data provenance, and the time each stage took, split into forward pass,
read-out, analysis and plotting, with tokens per second.
"""

import base64
import datetime
import html
import re
import time
from pathlib import Path
from typing import Any

from glt.core._errors import GltError
from glt.core._io import atomic_write_bytes, atomic_write_text, read_json, write_json
from glt.pipeline._provenance import environment, provenance

__all__ = ["render_html", "render_markdown", "write_report"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #0072B2}h2{margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0 1.2em}td,th{border:1px solid #ccc;padding:.25em .6em;
text-align:left;vertical-align:top}th{background:#f3f6fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1em 0}img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:.9em}
code{background:#f4f4f4;padding:0 .2em}
"""


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if v != v else f"{v:,.1f}" if abs(v) >= 100 else f"{v:.2f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def render_markdown(blocks: list[tuple[str, Any]]) -> str:
    """Markdown for ``blocks``: ``("h1".."h3", text)``, ``("p", text)``, ``("table", (header,
    rows))``, ``("figure", (relative png path, caption))``, ``("html", fragment)`` (report.html only).

    Example:
        >>> print(render_markdown([("h2", "Time"), ("table", (["stage", "s"], [["pos", 1.5]]))]))
        ## Time
        <BLANKLINE>
        | stage | s |
        |---|---|
        | pos | 1.50 |
        <BLANKLINE>
    """
    out: list[str] = []
    for kind, val in blocks:
        if kind in ("h1", "h2", "h3"):
            out += ["#" * int(kind[1]) + " " + val, ""]
        elif kind == "p":
            out += [val, ""]
        elif kind == "table":
            header, rows = val
            out.append("| " + " | ".join(header) + " |")
            out.append("|" + "---|" * len(header))
            for row in rows:
                out.append("| " + " | ".join(_cell(c).replace("|", "\\|") for c in row) + " |")
            out.append("")
        elif kind == "figure":
            path, caption = val
            out += [f"![{caption}]({path})", "", f"*{caption}*", ""]
        elif kind == "html":
            continue  # interactive views live in report.html only
        else:
            raise GltError(f"unknown report block kind {kind!r}")
    return "\n".join(out)


def render_html(blocks: list[tuple[str, Any]], root: Path, title: str) -> str:
    """Self-contained HTML for ``blocks``; figures are read from ``root`` and embedded as base64."""
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{_CSS}</style></head><body>"]
    for kind, val in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{html.escape(val)}</{kind}>")
        elif kind == "p":
            text = html.escape(val)
            while "`" in text and text.count("`") >= 2:
                text = text.replace("`", "<code>", 1).replace("`", "</code>", 1)
            out.append(f"<p>{text}</p>")
        elif kind == "table":
            header, rows = val
            out.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
            for row in rows:
                cells = "".join(f"<td class='num'>{html.escape(_cell(c))}</td>" if _num(c)
                                else f"<td>{html.escape(_cell(c))}</td>" for c in row)
                out.append(f"<tr>{cells}</tr>")
            out.append("</table>")
        elif kind == "figure":
            path, caption = val
            data = base64.b64encode((root / path).read_bytes()).decode("ascii")
            out.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
                       f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        elif kind == "html":
            out.append(val)  # a trusted fragment built by glt (the layer explorer escapes its own data)
    out.append("</body></html>")
    return "\n".join(out)


def _save_figure(fig: Any, folder: Path, name: str) -> str:
    import io

    for ext in ("png", "svg"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=150 if ext == "png" else None, bbox_inches="tight")
        atomic_write_bytes(folder / f"{name}.{ext}", buf.getvalue())
    return f"figures/{name}.png"


def _caption(fig: Any, name: str) -> str:
    """The figure's title (suptitle, else the first axes titles) and its file name."""
    sup = getattr(fig, "_suptitle", None)
    title = sup.get_text() if sup is not None else " | ".join(
        t for t in (a.get_title() or a.get_title(loc="left") for a in fig.axes) if t)
    return f"{title} (figures/{name}.png, .svg)" if title else f"figures/{name}.png"


def _source_of(result: Any) -> str:
    for attr in ("data_source", "source"):
        v = getattr(result, attr, None)
        if isinstance(v, str) and v:
            return v
    if hasattr(result, "text") and hasattr(result, "readout"):
        return "the text given by the study config (heatmap_text)"
    return "see the result file"


def _rate(n: Any, s: Any) -> Any:
    return n / s if s and s > 0 and n else float("nan")


_N = re.compile(r"(;\s*|\s*\(|,\s*)N=([\d,]+)\)?")


def _split_n(label: str) -> tuple[str, str]:
    """``(label without its N, the N)``: ``"flip rate (N=1,234)"`` -> ``("flip rate", "1,234")``."""
    m = _N.search(label)
    if not m:
        return label, ""
    inside = not m.group(1).strip().startswith("(")  # "(a; N=5)" keeps "(a)", "(N=5)" goes whole
    rest = label[: m.start()] + (")" if inside and m.group(0).endswith(")") else "") + label[m.end():]
    return rest.strip(), m.group(2)


def by_lens_rows(plan: list[Any], results: dict[str, Any], lenses: tuple[str, ...]) -> list[list[str]]:
    """The headline rows of every study with one column per lens: ``[study, task, measure, *values]``,
    each value followed by that lens's N where the measure has one.

    Example:
        >>> _split_n("Top 1-10 share, early (layers 1-4; N=1,024)")
        ('Top 1-10 share, early (layers 1-4)', '1,024')
    """
    table: dict[tuple[str, str, int], dict[str, Any]] = {}
    for s in plan:
        if s.name not in results or s.lens is None or not s.spec.key_rows:
            continue
        rows = s.spec.headlines(results[s.name])
        for i in s.spec.key_rows:
            if i < len(rows):
                label, n = _split_n(rows[i][0].replace(f"the {s.lens} lens", "the lens"))
                entry = table.setdefault((s.spec.title, s.variant or "", i), {"measure": label})
                entry[s.lens] = f"{rows[i][1]} (N={n})" if n else rows[i][1]
    return [[study, task, e["measure"], *(e.get(lens, "not run") for lens in lenses)]
            for (study, task, _), e in table.items()]


def _timing_rows(plan: list[Any], records: dict[str, dict[str, Any]]) -> tuple[list[list[Any]], dict[str, float]]:
    rows, tot = [], {"wall_s": 0.0, "forward_s": 0.0, "readout_s": 0.0, "analysis_s": 0.0,
                     "forward_tokens": 0, "readout_rows": 0}
    for st in plan:
        r = records.get(st.name)
        if r is None:
            continue
        rows.append([st.name, r["status"], r["wall_s"], r["forward_s"], r["readout_s"], r["analysis_s"],
                     r["forward_tokens"], _rate(r["forward_tokens"], r["forward_s"]),
                     r["readout_rows"], _rate(r["readout_rows"], r["readout_s"])])
        if r["wall_s"] == r["wall_s"]:
            for k in tot:
                tot[k] += r[k]
    return rows, tot


def write_report(out: Path, *, config: Any, plan: list[Any], results: dict[str, Any],
                 records: dict[str, dict[str, Any]], ctx: Any, compute_s: float,
                 progress: bool = True) -> tuple[Path, Path]:
    """Draw every figure, then write ``report.md`` and ``report.html`` into ``out``."""
    figdir = out / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    figs: dict[str, list[tuple[str, str]]] = {}
    views: dict[str, tuple[str, str]] = {}
    for spec in dict.fromkeys(s.spec for s in plan):
        done = {s: results[s.name] for s in plan if s.spec is spec and s.name in results}
        if not done:
            continue
        try:
            drawn = spec.figures(done)
        except GltError as e:
            figs[spec.key] = [("", f"figures could not be drawn: {e}")]
            continue
        figs[spec.key] = [(_save_figure(f, figdir, name), _caption(f, name)) for name, f in drawn.items()]
        if spec.interactive is not None:
            try:
                views[spec.key] = ("html", spec.interactive(done))
            except GltError as e:
                views[spec.key] = ("p", f"the interactive view could not be built: {e}")
    plot_s = time.perf_counter() - t0
    prov_path = out / "provenance.json"
    if ctx.loaded:
        # a resumed stage's provenance (its lens, the frequency table) is what the earlier run wrote:
        # keep it beside what this run loaded
        kept = any(r.get("status") == "resumed" for r in records.values()) and prov_path.is_file()
        earlier = read_json(prov_path, "study provenance") if kept else {}
        write_json(prov_path, {**(earlier if isinstance(earlier, dict) else {}), **provenance(ctx)})
    prov = read_json(prov_path, "study provenance") if prov_path.is_file() else {}
    env = environment()

    blocks: list[tuple[str, Any]] = [("h1", "glt study report")]
    lenses = " and ".join(f"{x} lens" for x in config.lenses)
    blocks.append(("p", f"Model `{prov.get('model', config.model)}` read with the {lenses}; "
                   f"{'quick' if config.quick else 'full'} settings; written "
                   f"{datetime.datetime.now().isoformat(timespec='seconds')} by glt {env['glt']}. "
                   "Layers are residual indices: 0 (emb) is the embedding output, the last index "
                   "the final residual. Ranks are 0-based in the data files and drawn 1-based."))
    failed = [n for n, r in records.items() if r["status"] == "failed"]
    if failed:
        blocks.append(("p", "Failed stages (rerun with --resume after fixing the cause): " +
                       "; ".join(f"{n}: {records[n].get('error', '')}" for n in failed)))
    summary_rows = []
    for s in plan:
        if s.name in results and s.spec.key_rows:
            rows = s.spec.headlines(results[s.name])
            summary_rows += [[s.spec.title, s.variant or "", s.lens or "", rows[i][0], rows[i][1]]
                             for i in s.spec.key_rows if i < len(rows)]
    if summary_rows:
        blocks.append(("h2", "Headline numbers"))
        blocks.append(("table", (["study", "task", "lens", "measure", "value"], summary_rows)))
    if len(config.lenses) > 1:
        side = by_lens_rows(plan, results, tuple(config.lenses))
        if side:
            blocks.append(("h2", "Headline numbers, lens by lens"))
            blocks.append(("p", "The same forward passes decoded by each lens (N per lens where it differs: "
                           "counts that depend on the lens's own reading, such as its early guesses)."))
            blocks.append(("table", (["study", "task", "measure", *(f"{x} lens" for x in config.lenses)], side)))
    for spec in dict.fromkeys(s.spec for s in plan):
        stages = [s for s in plan if s.spec is spec]
        blocks.append(("h2", spec.title))
        if spec.description:
            blocks.append(("p", spec.description))
        for s in stages:
            if s.name not in results:
                why = records.get(s.name, {}).get("error", "not run")
                blocks.append(("p", f"`{s.name}`: no result ({why})."))
                continue
            res = results[s.name]
            head = f"{s.variant} · " if s.variant else ""
            blocks.append(("h3", f"{head}{s.lens + ' lens' if s.lens else ''}".strip(" ·") or s.name))
            blocks.append(("table", (["measure", "value"], [[a, b] for a, b in spec.headlines(res)])))
            blocks.append(("p", f"Data: {_source_of(res)}. Files: `data/{s.name}.json`, `data/{s.name}*.csv`."))
        for path, name in figs.get(spec.key, []):
            blocks.append(("figure", (path, name)) if path else ("p", name))
        if spec.key in views:
            blocks.append(views[spec.key])

    rows, tot = _timing_rows(plan, records)
    blocks.append(("h2", "Time"))
    setup = "; ".join(f"{k} {v:.1f} s" for k, v in ctx.setup.items()) or "nothing loaded (all stages resumed)"
    blocks.append(("p", f"Machine: {env['platform']}, torch {env['torch']} with {env['torch_threads']} "
                   f"threads. Set-up this run: {setup}. Stages of this run took {compute_s:.1f} s, "
                   f"plotting {plot_s:.1f} s. Forward = the model's forward passes, read-out = the "
                   "lens read-out, analysis = the rest of the stage. Resumed stages show the time of "
                   "the run that computed them."))
    header = ["stage", "status", "wall s", "forward s", "read-out s", "analysis s", "tokens",
              "forward tok/s", "read-out rows", "read-out rows/s"]
    total = tot["wall_s"] + plot_s
    summary = [["total (stages)", "", tot["wall_s"], tot["forward_s"], tot["readout_s"], tot["analysis_s"],
                tot["forward_tokens"], _rate(tot["forward_tokens"], tot["forward_s"]),
                tot["readout_rows"], _rate(tot["readout_rows"], tot["readout_s"])],
               ["plotting", "this run", plot_s, 0.0, 0.0, 0.0, 0, float("nan"), 0, float("nan")]]
    blocks.append(("table", (header, rows + summary)))
    if total > 0:
        shares = {k: v / total for k, v in (("forward", tot["forward_s"]), ("read-out", tot["readout_s"]),
                                            ("analysis", tot["analysis_s"]), ("plotting", plot_s))}
        blocks.append(("p", "Share of the time: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in shares.items())
                       + f" (of {total:.1f} s)."))
    blocks.append(("h2", "Provenance"))
    blocks.append(("table", (["item", "value"], [[k, str(v)] for k, v in {**prov, **env}.items()]
                             + [["config", str(config.to_dict())]])))
    write_json(out / "timings" / "summary.json", {"stages": records, "plotting_s": plot_s,
                                                  "setup": ctx.setup, "compute_s": compute_s,
                                                  "totals": tot})
    md = atomic_write_text(out / "report.md", render_markdown(blocks))
    page = atomic_write_text(out / "report.html", render_html(blocks, out, "glt study report"))
    return md, page
