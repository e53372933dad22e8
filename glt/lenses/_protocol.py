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
"""

from typing import Any, Protocol, runtime_checkable

from jaxtyping import Float
from torch import Tensor

from glt.lenses._logit import Unembed

__all__ = ["Lens"]

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
