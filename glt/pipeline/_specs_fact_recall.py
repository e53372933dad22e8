"""The fact-recall stage of ``glt study``: glt's own fact prompts, teacher-forced."""

from collections.abc import Sequence
from typing import Any

from glt.pipeline._context import StudyContext
from glt.pipeline._stages import Stage, StudySpec, by_stage
from glt.plotting._style import glt_style, new_figure
from glt.studies.fact_recall import FactRecallResult, plot_fact_onsets, plot_fact_ranks
from glt.studies.fact_recall._data import load_facts
from glt.studies.fact_recall._run import run_fact_recall

__all__ = ["fact_recall_spec"]


def _run_facts(ctx: StudyContext, stages: Sequence[Stage]) -> dict[str, Any]:
    facts = load_facts("glt", max_items=ctx.config.fact_items)
    lenses = [ctx.lens(s.lens) for s in stages]
    res = run_fact_recall(ctx.model, lenses, facts, batch_size=ctx.config.batch_size, progress=ctx.progress)
    return by_stage(stages, lenses, res)


def _figs(results: dict[Stage, Any]) -> dict[str, Any]:
    out = {}
    for s, res in results.items():
        outcome = "correct" if bool(res.correct.any()) else "incorrect"
        with glt_style():
            fig = new_figure((12.0, 4.2))
            a, b = fig.subplots(1, 2, sharey=True)
            plot_fact_onsets(res, kind="first", outcome=outcome, ax=a, title="first crossing")
            plot_fact_onsets(res, kind="stable", outcome=outcome, ax=b, title="stable onset")
            fig.suptitle(f"Fact recall: earliest layer where answer token j is in the top-k "
                         f"({outcome} tokens, {res.lens} lens)")
        out[f"fact_onsets_{s.lens}"] = fig
        out[f"fact_ranks_{s.lens}"] = plot_fact_ranks(res, outcome=outcome)
    return out


def _head(res: Any) -> list[tuple[str, str]]:
    rows = [("facts analysed (skipped)", f"{len(res.facts)} ({len(res.skipped)}: "
             + (", ".join(f"{k}: {v}" for k, v in res.skip_counts.items()) or "none") + ")"),
            ("answers reproduced by greedy decoding", f"{int(res.answer_correct.sum())} of {len(res.facts)}")]
    df = res.summary(ks=(1,))
    for _, r in df.iterrows():
        if r["n"]:
            rows.append((f"n={r['length']} token {r['position'] + 1}, {r['outcome']} (N={r['n']}): "
                         "median first / stable onset at k=1",
                         f"{_f(r['median_first_k1'])} / {_f(r['median_stable_k1'])}"))
    return rows


def _f(v: Any) -> str:
    v = float(v)
    return "never" if v != v else f"{v:.1f}"


def fact_recall_spec() -> StudySpec:
    return StudySpec(
        "facts", "Fact recall", _run_facts, FactRecallResult.load,
        lambda r: {"": r.to_dataframe(), "_tokens": r.token_dataframe()}, _figs, _head, key_rows=(1, 2, 3),
        description="glt's hand-written fact prompts; prompt + answer in one teacher-forced "
        "pass; answer token j is read at the position before it. Curves per answer length n "
        "and token j; correct (final top-1 = gold) and incorrect tokens are kept apart.")
