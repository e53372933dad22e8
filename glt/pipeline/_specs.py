"""The studies `glt study` runs, each as a `glt.pipeline._stages.StudySpec`.

Every run function reads the config and the model only; data are sampled with the config's seed
so a stage gives the same result whenever it runs.
"""

import dataclasses
import random
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from glt.core._capture import capture_residuals
from glt.core._codec import Format, Saved
from glt.core._models import model_name
from glt.decoding._readout import Readout, readout
from glt.pipeline._context import StudyContext
from glt.pipeline._stages import Stage, StudySpec, by_stage, fmt, pct
from glt.plotting._curves import plot_side_by_side, plot_token_heatmap
from glt.plotting._explorer import Explorer
from glt.plotting._style import glt_style, new_figure
from glt.studies.multiple_choice import MultipleChoiceResult
from glt.studies.multiple_choice._data import load_mc_dataset, mmlu_shots, split_binary_shots
from glt.studies.multiple_choice._plots import plot_multiple_choice
from glt.studies.multiple_choice._prompts import format_mc_prompt
from glt.studies.multiple_choice._run import run_multiple_choice
from glt.studies.part_of_speech import PosResult, plot_pos_onsets, plot_pos_ranks
from glt.studies.part_of_speech._run import run_pos_study
from glt.studies.patching import PatchingResult, plot_patching
from glt.studies.patching._run import patch_layers

__all__ = ["TextReadout", "heatmap_spec", "multiple_choice_spec", "part_of_speech_spec", "patching_spec"]


# ---------------------------------------------------------------- heatmap (one text, every layer)
@dataclasses.dataclass(frozen=True, eq=False)
class TextReadout(Saved):
    """A `glt.Readout` of one text with its token strings, saved as JSON (for the heatmap).

    The read-out is stored field by field, with the same declared dtypes and shape checks as
    `glt.Readout.save`'s safetensors file.
    """

    _format: ClassVar[Format] = Format("glt.TextReadout", "text read-out", "delete it and rerun the study")

    readout: Readout
    strings: dict[int, str]
    text: str
    model: str

    def decode(self, i: int) -> str:
        return self.strings.get(int(i), str(int(i)))


def _run_heatmap(ctx: StudyContext, stages: Sequence[Stage]) -> dict[str, TextReadout]:
    model = ctx.model
    stack = capture_residuals(model, [ctx.config.heatmap_text])  # one forward pass for every lens
    out = {}
    for stage in stages:
        r = readout(stack, ctx.lens(stage.lens), top_k=3)
        ids = set(r.topk_ids.flatten().tolist()) | set(r.input_ids.tolist())
        tok = model.tokenizer
        strings = {i: tok.decode([i]) if tok is not None else str(i) for i in sorted(ids)}
        out[stage.name] = TextReadout(r, strings, ctx.config.heatmap_text, model_name(model))
    return out


def _heat_figs(results: dict[Stage, Any]) -> dict[str, Any]:
    return {f"heatmap_{s.lens}": plot_token_heatmap(res.readout, tokenizer=res.decode)
            for s, res in results.items()}


def _heat_explorer(results: dict[Stage, Any]) -> str:
    """report.html's layer explorer of the heatmap text, one grid per lens."""
    ordered = sorted(results.items(), key=lambda kv: kv[0].lens != "logit")
    strings = {i: t for _, res in ordered for i, t in res.strings.items()}
    text = ordered[0][1].text
    return Explorer.from_readouts({s.lens: res.readout for s, res in ordered},
                                  tokenizer=lambda i: strings.get(i, str(i)),
                                  title=f"Layer explorer of the heatmap text: {text}").to_html(standalone=False)


def _heat_head(res: TextReadout) -> list[tuple[str, str]]:
    last = res.readout.n_rows - 1
    settle = (res.readout.top1[:, last] != res.readout.top1[-1, last]).nonzero()
    layer = int(settle.max()) + 1 if settle.numel() else 0
    return [("text", repr(res.text)),
            ("final prediction at the last position", repr(res.decode(int(res.readout.top1[-1, last])))),
            ("layer from which the last position's top-1 is final", str(layer))]


# ---------------------------------------------------------------- part of speech
def _run_pos(ctx: StudyContext, stages: Sequence[Stage]) -> dict[str, Any]:
    lenses = [ctx.lens(s.lens) for s in stages]
    res = run_pos_study(ctx.model, lenses, max_items=ctx.config.pos_items,
                        batch_size=ctx.config.batch_size, progress=ctx.progress)
    return by_stage(stages, lenses, res)


def _pos_subset(res: Any) -> str:
    return "correct" if any(c.group.startswith("correct/") for c in res.curves) else "all"


def _pos_figs(results: dict[Stage, Any]) -> dict[str, Any]:
    out = {}
    for s, res in results.items():
        subset = _pos_subset(res)
        with glt_style():
            fig = new_figure((12.0, 4.3))
            a, b = fig.subplots(1, 2, sharey=True)
            plot_pos_onsets(res, kind="first", ax=a, title="first crossing")
            plot_pos_onsets(res, kind="stable", ax=b, title="stable onset")
            fig.suptitle(f"Part of speech: earliest layer where the next word's first token is in "
                         f"the top-k ({subset} items, {res.lens} lens)")
        out[f"pos_onsets_{s.lens}"] = fig
        have = {c.group for c in res.curves}
        groups = [g for g in ("function", "content") if f"{subset}/{g}" in have]
        if groups:
            out[f"pos_groups_{s.lens}"] = plot_pos_onsets(
                res, labels=groups, title=f"Function vs content words ({subset} items, {res.lens} lens)")
        out[f"pos_ranks_{s.lens}"] = plot_pos_ranks(res)
    if len(results) >= 2:
        ordered = [res for _, res in sorted(results.items(), key=lambda kv: kv[0].lens != "logit")]
        name = "pos_onsets_" + "_vs_".join(res.lens for res in ordered)
        out[name] = plot_side_by_side(*ordered, plot=plot_pos_onsets, kind="first")
    return out


def _pos_head(res: Any) -> list[tuple[str, str]]:
    subset = _pos_subset(res)
    rows = []
    df = res.summary_dataframe(k=1)
    df = df[df["subset"] == subset]
    groups = ("function", "content", "other")
    df = df.assign(_g=[0 if lab in groups else 1 for lab in df["label"]]).sort_values("_g", kind="stable")
    for _, row in df.iterrows():
        rows.append((f"{row['label']}: mean first / stable onset at k=1 ({subset}, N={row['n']})",
                     f"{fmt(row.get('first_mean'), 1)} / {fmt(row.get('stable_mean'), 1)}"))
    rows.append(("items (correct of all)", f"{int(res.correct.sum())} of {res.n_items}"))
    skipped = sum(n for _, _, n in res.skipped)
    rows.append(("skipped (word, tag) cases", str(skipped)))
    return rows


# ---------------------------------------------------------------- multiple choice
def _run_mc(ctx: StudyContext, stages: Sequence[Stage]) -> dict[str, Any]:
    shots = ctx.config.mc_shots
    lenses = [ctx.lens(s.lens) for s in stages]
    res = run_multiple_choice(ctx.model, lenses, task=stages[0].variant,
                              n_items=ctx.config.mc_items, shots=min(shots, 5), permute_symbols=True,
                              seed=ctx.config.seed, batch_size=max(1, ctx.config.batch_size // 2),
                              progress=ctx.progress)
    return by_stage(stages, lenses, res)


def _mc_tables(res: Any) -> dict[str, Any]:
    return {"": res.to_dataframe(), "_items": res.item_table(), "_curves": res.curves(),
            "_summary": res.summary()}


def _mc_figs(results: dict[Stage, Any]) -> dict[str, Any]:
    return {f"mc_{s.variant}_{s.lens}": plot_multiple_choice(res) for s, res in results.items()}


def _mc_head(res: Any) -> list[tuple[str, str]]:
    s = res.summary()
    main = s[(s["run"] == "main") & (s["group"] == "all")].iloc[0]
    rows = [("items (skipped)", f"{int(main['n'])} ({int(main['n_skipped'])})"),
            ("accuracy of the final choice among the options", pct(main["accuracy"])),
            ("final top-1 is an option token", pct(main["top1_is_option"])),
            (f"format onset (all options in top-{res.top_k_format}), median stable layer "
             f"(N={int(main['format_stable_n'])})", fmt(main["format_stable_median"], 1)),
            (f"decision onset, median stable layer (N={int(main['decision_stable_n'])})",
             fmt(main["decision_stable_median"], 1))]
    ctrl = s[(s["run"] == "control") & (s["group"] == "all")]
    if len(ctrl):
        rows.append((f"control ({ctrl.iloc[0]['symbols_mode']}) accuracy", pct(ctrl.iloc[0]["accuracy"])))
    return rows


# ---------------------------------------------------------------- patching
def _run_patch(ctx: StudyContext, stages: Sequence[Stage]) -> dict[str, Any]:
    cfg = ctx.config
    rng = random.Random(cfg.seed)
    mmlu = list(load_mc_dataset("mmlu").examples)
    rng.shuffle(mmlu)
    sst_shots, sst_rest = split_binary_shots(load_mc_dataset("sst2").examples, cfg.patch_shots, cfg.seed)
    n = cfg.patch_pairs
    targets = [format_mc_prompt(e, mmlu_shots(e.subject, min(cfg.patch_shots, 5))).text for e in mmlu[:n]]
    sources = [format_mc_prompt(e, sst_shots, task="sst2").text for e in sst_rest[:n]]
    lenses = [ctx.lens(s.lens) for s in stages]
    res = patch_layers(ctx.model, targets, sources, target_options=[" A", " B", " C", " D"],
                       source_options=[" negative", " positive"], lens=lenses,
                       batch_size=cfg.batch_size, progress=ctx.progress)
    return by_stage(stages, lenses, res)


def _patch_figs(results: dict[Stage, Any]) -> dict[str, Any]:
    return {f"patching_{s.lens}": plot_patching(res) for s, res in results.items()}


def _patch_head(res: Any) -> list[tuple[str, str]]:
    ts = res.transition_stable.numpy()
    ls = res.lens_options_stable.numpy()
    med = (lambda v: fmt(np.median(v[v >= 0]), 1) if (v >= 0).any() else "never")  # noqa: E731
    return [("pairs (valid: each unpatched prompt on its own options)", f"{res.n_pairs} ({int(res.valid.sum())})"),
            ("median patching transition layer (stable)", med(ts)),
            (f"median layer where the {res.lens} lens settles on the source options", med(ls)),
            *_patch_differ(res)]


def _patch_differ(res: Any) -> list[tuple[str, str]]:
    """How many pairs' patching transition differs (>= 1 layer, or one side never settles) from
    each lens reading: its options rule and its top-1 settle layer."""
    df = res.to_dataframe("pairs")
    out = []
    for col, what in (("lens_options_stable", "settles on the source options"),
                      ("lens_settle", "top-1 settles on the final top-1")):
        bad = int((df["transition_stable"] != df[col]).sum())  # -1 (never) equals only -1
        out.append((f"pairs whose patching transition differs from the layer where the lens {what}",
                    f"{bad} of {res.n_pairs}"))
    return out


def _tables(res: Any) -> dict[str, Any]:
    return {"": res.to_dataframe()}


def _patch_tables(res: Any) -> dict[str, Any]:
    return {"": res.to_dataframe("layers"), "_pairs": res.to_dataframe("pairs")}


def heatmap_spec() -> StudySpec:
    """The heatmap stage: one text, every layer."""
    return StudySpec("heatmap", "One text, every layer", _run_heatmap, TextReadout.load,
        lambda r: {"": r.readout.to_dataframe()}, _heat_figs, _heat_head, key_rows=(),
        description="The top-1 token of every layer at every position of one text.", interactive=_heat_explorer)


def part_of_speech_spec() -> StudySpec:
    """The part-of-speech stage."""
    return StudySpec("pos", "Part of speech", _run_pos, PosResult.load,
        lambda r: {"": r.to_dataframe(), "_curves": r.curves_dataframe()}, _pos_figs, _pos_head, key_rows=(0, 1),
        description="Prefix = the text before the first word with a given tag; tracked "
        "token = that word's first token (spaCy en_core_web_sm tags). Onset = earliest "
        "layer where its rank is inside the top-k (first crossing, and stable: inside "
        "at every later layer).")


def multiple_choice_spec() -> StudySpec:
    """The multiple-choice stage (one per task)."""
    return StudySpec("mc", "Multiple choice", _run_mc, MultipleChoiceResult.load,
        _mc_tables, _mc_figs, _mc_head, variants=lambda c: c.mc_tasks, key_rows=(1, 3, 4),
        description="Read at the answer position with every option token as a target. "
        "Format = probability mass on the option tokens; decision = the layer's choice "
        "among the options equals the final choice. Dotted: the permutation control "
        "(option symbols relabelled).")


def patching_spec() -> StudySpec:
    """The activation-patching stage."""
    return StudySpec("patching", "Activation patching", _run_patch, PatchingResult.load,
        _patch_tables, _patch_figs, _patch_head, key_rows=(1, 2, 3),
        description="The last residual of an SST-2 prompt (source) replaces the last "
        "residual of an MMLU prompt (target) at one layer; the output lands on the "
        "source when its best source option beats its best MMLU letter.")
