"""The result of `glt.patch_layers`: per (pair, patched layer) outcomes and the lens's layers.

`PatchingResult` holds what the patching run measured (output probabilities of the two option
sets, top-1 and where it lands, per patched layer), the transition layers derived from it, and the
tuned/logit-lens reading of the unpatched source prompt; it tabulates them (``layers``, ``pairs``,
``lens``), lists the pairs where patching and the lens disagree, and saves/loads as JSON.
"""

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from jaxtyping import Bool, Float, Int
from torch import Tensor

from glt.core._check import checked
from glt.core._codec import Format, Saved
from glt.core._errors import GltError

__all__ = ["PatchingResult"]


@dataclass(frozen=True, eq=False)
class PatchingResult(Saved):
    """Per (pair, patched layer) outcomes of `patch_layers`, with the lens-derived layers.

    Attributes:
        model_name, lens: provenance (``lens`` names the lens used for the comparison).
        n_layers, layer_labels: block count and labels of residual indices ``0 .. n_layers``.
        layers: the patched residual indices (the ``patch`` axis).
        position: ``"last"`` or ``"target_pos,source_pos"``.
        target_texts, source_texts: the prompts of each pair.
        target_options, source_options: option token ids; ``*_option_labels`` their strings.
        p_target, p_source: ``[pair, patch]`` output probability mass on each option set.
        lands_on_source: ``[pair, patch]`` the union top-1 option is a source option.
        top1, top1_tokens: the output's top-1 token over the whole vocabulary (id, string).
        clean_target_p, clean_source_p: ``[pair, set]`` the unpatched prompts' masses on
            (target options, source options); ``clean_*_on_source`` their union top-1 side.
        transition_first, transition_stable: ``[pair]`` residual index, -1 if never.
        lens_p_target, lens_p_source, lens_on_source, lens_top1: ``[pair, layer]`` the lens on
            the unpatched source prompt at every residual index.
        lens_settle, lens_options_first, lens_options_stable: ``[pair]`` lens-derived layers.
    """

    _format: ClassVar[Format] = Format(
        "glt.PatchingResult", "patching result", "delete it and rebuild it with patch_layers(...).save(path)",
        sizes={"pair": "target_texts", "patch": "layers", "layer": "layer_labels"})

    model_name: str
    lens: str
    n_layers: int
    layer_labels: tuple[str, ...]
    layers: tuple[int, ...]
    position: str
    target_texts: tuple[str, ...]
    source_texts: tuple[str, ...]
    target_options: tuple[int, ...]
    source_options: tuple[int, ...]
    target_option_labels: tuple[str, ...]
    source_option_labels: tuple[str, ...]
    p_target: Float[Tensor, "pair patch"]
    p_source: Float[Tensor, "pair patch"]
    lands_on_source: Bool[Tensor, "pair patch"]
    top1: Int[Tensor, "pair patch"]
    top1_tokens: tuple[tuple[str, ...], ...]
    clean_target_p: Float[Tensor, "pair 2"]
    clean_source_p: Float[Tensor, "pair 2"]
    clean_target_on_source: Bool[Tensor, " pair"]
    clean_source_on_source: Bool[Tensor, " pair"]
    transition_first: Int[Tensor, " pair"]
    transition_stable: Int[Tensor, " pair"]
    lens_p_target: Float[Tensor, "pair layer"]
    lens_p_source: Float[Tensor, "pair layer"]
    lens_on_source: Bool[Tensor, "pair layer"]
    lens_top1: Int[Tensor, "pair layer"]
    lens_settle: Int[Tensor, " pair"]
    lens_options_first: Int[Tensor, " pair"]
    lens_options_stable: Int[Tensor, " pair"]

    @property
    def n_pairs(self) -> int:
        return len(self.target_texts)

    @property
    def valid(self) -> Bool[Tensor, " pair"]:
        """Pairs whose unpatched target lands on its own options and source on its own."""
        return ~self.clean_target_on_source & self.clean_source_on_source

    @checked
    def to_dataframe(self, table: Literal["layers", "pairs", "lens"] = "layers", *, tolerance: int = 0) -> Any:
        """A tidy table: ``"layers"`` (pair x patched layer), ``"pairs"`` or ``"lens"``.

        ``pairs`` has one row per pair: the transition layers, the lens layers, the differences
        ``transition_stable - lens_options_stable`` and ``transition_stable - lens_settle``,
        ``disagrees`` (either difference beyond ``tolerance`` layers, or exactly one side never
        settles) and ``valid`` (see `valid`).
        ``lens`` has one row per (pair, residual index) of the unpatched source read by the lens.
        """
        import pandas as pd

        common = {"model": self.model_name, "position": self.position}
        recs: list[dict[str, Any]] = []
        t_set, s_set = set(self.target_options), set(self.source_options)
        for p in range(self.n_pairs):
            if table == "layers":
                for j, layer in enumerate(self.layers):
                    t1 = int(self.top1[p, j])
                    recs.append(
                        {**common, "pair": p, "layer": layer, "layer_label": self.layer_labels[layer],
                         "p_target": float(self.p_target[p, j]), "p_source": float(self.p_source[p, j]),
                         "lands_on": "source" if bool(self.lands_on_source[p, j]) else "target",
                         "top1": t1, "top1_token": self.top1_tokens[p][j],
                         "top1_set": "target" if t1 in t_set else "source" if t1 in s_set else "other"}
                    )
            elif table == "lens":
                for layer in range(self.n_layers + 1):
                    recs.append(
                        {**common, "lens": self.lens, "pair": p, "layer": layer,
                         "layer_label": self.layer_labels[layer],
                         "p_target": float(self.lens_p_target[p, layer]),
                         "p_source": float(self.lens_p_source[p, layer]),
                         "lands_on": "source" if bool(self.lens_on_source[p, layer]) else "target",
                         "top1": int(self.lens_top1[p, layer])}
                    )
            else:
                ts = int(self.transition_stable[p])
                lo, ls = int(self.lens_options_stable[p]), int(self.lens_settle[p])
                d_opt, bad_opt = _compare(ts, lo, tolerance)
                d_set, bad_set = _compare(ts, ls, tolerance)
                recs.append(
                    {**common, "lens": self.lens, "pair": p, "target_text": self.target_texts[p],
                     "source_text": self.source_texts[p], "valid": bool(self.valid[p]),
                     "transition_first": int(self.transition_first[p]), "transition_stable": ts,
                     "lens_options_first": int(self.lens_options_first[p]),
                     "lens_options_stable": lo, "lens_settle": ls,
                     "difference_options": d_opt, "difference_settle": d_set,
                     "disagrees": bad_opt or bad_set}
                )
        return pd.DataFrame(recs)

    def disagreements(self, tolerance: int = 0) -> Any:
        """The ``pairs`` rows where patching and the lens disagree by more than ``tolerance``."""
        if not isinstance(tolerance, int) or tolerance < 0:
            raise GltError(f"tolerance must be an int >= 0 (layers), got {tolerance!r}")
        df = self.to_dataframe("pairs", tolerance=tolerance)
        return df[df["disagrees"]].reset_index(drop=True)


def _compare(patch: int, lens: int, tolerance: int) -> tuple[float, bool]:
    """``(patch - lens, disagrees)``; -1 means "never", which disagrees with any real layer."""
    if patch >= 0 and lens >= 0:
        return float(patch - lens), abs(patch - lens) > tolerance
    return math.nan, (patch >= 0) != (lens >= 0)

