"""The errors filterwatch raises on purpose; each one's docstring is its message for people."""

from __future__ import annotations


class FilterwatchError(Exception):
    """filterwatch failed."""

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or (self.__doc__ or "").strip())
        self.detail = detail or (self.__doc__ or "").strip()


class ConfigError(FilterwatchError):
    """The configuration is not valid.

    Its message has one shape, ``<file>: <key path>: <problem>``, for example
    ``agent.yaml: probes.timeout_s: expected a number, got "ten"``; the key is left out when
    the whole file is at fault. A configuration dataclass's own check raises it with no file
    and its field's name (``ConfigError("", "timeout_s", "must be greater than 0, got 0")``);
    the loader adds the file and the path to the dataclass.
    """

    def __init__(self, path: str, key: str, problem: str) -> None:
        super().__init__(": ".join(part for part in (path, key, problem) if part))
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
