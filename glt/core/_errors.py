"""The one exception glt raises for every user error."""


class GltError(ValueError):
    """A user error: the message names the argument, what was expected, what arrived and the fix.

    Example:
        >>> try:
        ...     raise GltError("top_k must be >= 1, got 0: pass top_k=1 or more")
        ... except ValueError as e:
        ...     print(type(e).__name__)
        GltError
    """
