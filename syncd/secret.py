"""A string that never prints itself."""

from __future__ import annotations

__all__ = ["Secret", "UnresolvedSecret"]


class Secret:
    """Holds a credential. ``repr``/``str`` show ``'***'``; ``reveal()`` returns the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)


class UnresolvedSecret(Secret):
    """A secret whose ``${NAME}`` could not be resolved, in a config loaded for a command that needs
    no vendor secret (``status``, ``deadletters list`` ...). Revealing it raises the config error the
    strict load would have raised, so nothing can run on a missing secret by accident."""

    __slots__ = ("problems",)

    def __init__(self, problems: list[str]) -> None:
        super().__init__("")
        self.problems = list(problems)

    def reveal(self) -> str:
        from syncd.errors import ConfigError

        raise ConfigError(self.problems)

    def __bool__(self) -> bool:
        return True
