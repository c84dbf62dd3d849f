"""A string that never shows itself: masked in repr, str and formatted output."""

from __future__ import annotations

__all__ = ["MASK", "Secret"]

MASK = "***"


class Secret:
    """Wraps a credential so that printing, logging or repr() shows only ``***``.

    Call :meth:`reveal` at the single place that must hand the value to a library.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("a secret must be a string")
        self._value = value

    def reveal(self) -> str:
        """Return the real value; never print what this returns."""
        return self._value

    def __repr__(self) -> str:
        return repr(MASK)

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return format(MASK, spec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)
