"""The errors filterwatch raises on purpose; each one's docstring is its message for people."""

from __future__ import annotations


class FilterwatchError(Exception):
    """filterwatch failed."""

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or (self.__doc__ or "").strip())
        self.detail = detail or (self.__doc__ or "").strip()


class ConfigError(FilterwatchError):
    """The configuration is not valid."""

    def __init__(self, path: str, key: str, problem: str) -> None:
        where = f"{path}: {key}" if key else path
        super().__init__(f"{where}: {problem}")
        self.path = path
        self.key = key
        self.problem = problem


class CodecError(FilterwatchError):
    """The bytes are not a valid filterwatch msgpack document."""


class SchemaError(FilterwatchError):
    """The document does not match the filterwatch wire schema."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field
        self.problem = problem
