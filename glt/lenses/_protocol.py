"""The lens contract: what the read-out, the studies and the evaluation need from a lens.

`Lens` is a `typing.Protocol`: any object with these four members is a lens, subclassing is not
needed. `glt.LogitLens` and `glt.TunedLens` satisfy it; so does a lens of your own, e.g. one
built on the model's `glt.Unembed`. Functions taking a lens are annotated ``lens: Lens``, so a
static type checker checks their callers, and at run time (`glt.core._check.checked`) a value
lacking a member raises `GltError` naming ``lens`` and the members it lacks.

Dimension names are TransformerLens's: ``layer`` is the residual index (0 = embedding output,
``n_layers`` = the final residual, before the final norm; see `glt.ResidualStack`), ``d_model``
the residual width, ``d_vocab`` the vocabulary.

LogitLens and TunedLens also offer tuned-lens's per-index contract, ``transform_hidden(h, idx)``
and ``lens(h, idx)`` (logits); the read-out does not need them, so `Lens` does not ask for them.

Mid-block residuals (``resid_mid``, captured with ``resid_mid=True``) are optional: a lens reads
them when it has ``reads_resid_mid = True`` and a method ``transform_sites(resid, sites)`` (the
stack's `glt.ResidualStack.sites`). `glt.LogitLens` does, and a `glt.TunedLens` with mid translators
(a least-squares fit with ``resid_mid=True``); a KL-trained `glt.TunedLens`, `glt.JacobianLens`
(translators for block-boundary residuals only) and lenses without these members do not, and
`transform_residuals` raises GltError for them saying which lenses do.
"""

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from jaxtyping import Float
from torch import Tensor

from glt.core._capture import ResidualSite
from glt.core._errors import GltError
from glt.lenses._logit import Unembed, no_resid_mid_message

__all__ = ["Lens", "lens_set", "reads_resid_mid", "require_resid_mid", "transform_residuals"]

_MEMBERS = ("name", "unembed", "transform_stack", "check_compatible")


class _ByAttributes(type(Protocol)):  # type: ignore[misc]
    """``isinstance(x, Lens)`` by ``hasattr`` on every Python version.

    Python >= 3.12 looks a runtime protocol's members up statically (``inspect.getattr_static``),
    which misses what a ``torch.nn.Module`` keeps in its ``_modules`` (such as a lens's
    ``unembed``); 3.10 and 3.11 use ``hasattr``, as this does everywhere.
    """

    def __instancecheck__(cls, obj: Any) -> bool:
        return all(hasattr(obj, m) for m in _MEMBERS) and all(
            callable(getattr(obj, m)) for m in ("transform_stack", "check_compatible"))


@runtime_checkable
class Lens(Protocol, metaclass=_ByAttributes):
    """What glt needs from a lens: a name, the model's read-out, and a map of residual stacks.

    A lens decodes residual index ``idx`` as ``unembed(transform(h, idx))``: ``transform`` moves a
    residual to where the final layer's would be (the identity for the logit lens, an affine
    translator per index for the tuned lens) and ``unembed`` is the model's final norm,
    unembedding and soft-cap. The read-out applies ``transform_stack`` to every layer at once
    and walks ``unembed`` over the vocabulary in tiles.

    Attributes:
        name: short name recorded in every result (``"logit"``, ``"tuned"``, ...).
        unembed: the model's read-out (`glt.Unembed`: final norm recomputed on each input,
            ``W_U`` stored ``[d_vocab, d_model]``, ``b_U``, output soft-cap).

    Example:
        >>> import torch
        >>> from glt.lenses._logit import LogitLens, Unembed
        >>> from glt.lenses._tuned import TunedLens
        >>> unembed = Unembed(torch.nn.Identity(), torch.randn(5, 11), None)  # d_model 5, d_vocab 11
        >>> isinstance(LogitLens(unembed, n_layers=3), Lens), isinstance(TunedLens(unembed, 3), Lens)
        (True, True)
        >>> isinstance("logit", Lens)
        False
    """

    name: str
    unembed: Unembed

    def transform_stack(self, resid: Float[Tensor, "layer ... d_model"]) -> Float[Tensor, "layer ... d_model"]:
        """Every residual as the final layer would see it, before ``unembed``.

        Args:
            resid: ``[layer, ..., d_model]`` residuals, layer ``i`` holding residual index ``i``
                (all ``n_layers + 1`` of them; ``...`` is any batch shape, e.g. ``row`` or
                ``batch pos``).

        Returns:
            ``[layer, ..., d_model]``, the same shape; float32 or the lens's own dtype.
        """
        ...

    def check_compatible(self, n_residuals: int, d_model: int) -> None:
        """Raise `GltError` unless a stack of ``n_residuals`` residual indices of width ``d_model``
        fits this lens (the message names what the lens was built for and the fix)."""
        ...


def lens_set(lens: "Lens | Sequence[Lens]") -> tuple[dict[str, "Lens"], bool]:
    """``({name: lens}, single)`` for a study that takes one lens or several.

    The studies accept a sequence of lenses to decode the same forward passes with each (every
    lens from one forward pass); they key their results by ``lens.name``, so names must differ.
    ``single`` says a lone lens was passed (the study then returns its result, not a dict).

    Example:
        >>> import torch
        >>> from glt.lenses._logit import LogitLens, Unembed
        >>> logit = LogitLens(Unembed(torch.nn.Identity(), torch.randn(5, 11), None), n_layers=3)
        >>> lens_set(logit)[1], list(lens_set([logit])[0])
        (True, ['logit'])
    """
    if isinstance(lens, Lens):
        return {lens.name: lens}, True
    if isinstance(lens, (str, bytes)) or not isinstance(lens, Sequence) or not lens:
        raise GltError(f"lens must be a lens or a non-empty list of lenses, got {type(lens).__name__} {lens!r:.60}: "
                       "pass e.g. glt.LogitLens.from_model(model) or [logit_lens, tuned_lens]")
    out: dict[str, Lens] = {}
    for i, one in enumerate(lens):
        if not isinstance(one, Lens):
            missing = [m for m in _MEMBERS if not hasattr(one, m)]
            raise GltError(f"lens[{i}] is a {type(one).__name__}, not a lens (it lacks {missing}): "
                           "pass lens objects such as glt.LogitLens.from_model(model)")
        if one.name in out:
            raise GltError(f"lens[{i}] is named {one.name!r} like an earlier lens: results are keyed by lens name, "
                           "so give each lens a distinct name (set its .name)")
        out[one.name] = one
    return out, False


def reads_resid_mid(lens: Any) -> bool:
    """Whether ``lens`` decodes mid-block (``resid_mid``) residuals: True for `glt.LogitLens` and a
    `glt.TunedLens` with mid translators (least squares, ``resid_mid=True``); False for a KL-trained
    `glt.TunedLens`, `glt.JacobianLens` and lenses without ``transform_sites``."""
    return bool(getattr(lens, "reads_resid_mid", False)) and callable(getattr(lens, "transform_sites", None))


def require_resid_mid(lens: Any, argument: str = "lens") -> None:
    """GltError naming ``argument`` unless ``lens`` reads ``resid_mid`` residuals (`reads_resid_mid`)."""
    if not reads_resid_mid(lens):
        raise GltError(no_resid_mid_message(lens, argument))


def transform_residuals(
    lens: Lens, resid: Float[Tensor, "layer ... d_model"], sites: tuple[ResidualSite, ...]
) -> Float[Tensor, "layer ... d_model"]:
    """``lens.transform_stack(resid)``, or ``lens.transform_sites(resid, sites)`` when ``sites``
    holds mid-block residuals (GltError if the lens does not read them, see `require_resid_mid`)."""
    if not any(s.mid for s in sites):
        return lens.transform_stack(resid)
    require_resid_mid(lens)
    return lens.transform_sites(resid, sites)  # type: ignore[attr-defined]
