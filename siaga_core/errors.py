"""The one error tree: every error Siaga raises on purpose is a `SiagaError`.

    SiagaError                 every error Siaga raises on purpose
    ├── ConfigurationError     a file, variable, argument or scenario that cannot be used
    │   └── ConfigFileError    FILE:LINE: PLACE: MESSAGE, one line per problem
    ├── InputError             a request that cannot be done as asked (a silence, an ack, a topic)
    ├── StorageError           could not make durable or read back (InfluxDB, spool, SQLite)
    ├── DeliveryError          a peer refused or was unreachable (broker, API, receiver)
    └── SandboxError           the local servers of the demo and the tests

Packages raise the child that says what went wrong; only the edges translate: the command line
(`siaga.cli.main`: a `ConfigurationError` or any other `SiagaError` is one message and exit 1)
and the HTTP API (`siaga.api.context`: `InputError` 400/404/409, `StorageError` 503). Anything
else that escapes is a bug, and keeps its traceback. Classes that were a `ValueError` or a
`RuntimeError` before the tree existed keep that as a second base, because callers (and
pydantic validators) catch it.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class SiagaError(Exception):
    """Root of every error Siaga raises on purpose."""


class ConfigurationError(SiagaError):
    """A file, environment variable, argument or scenario that cannot be used as given."""


class InputError(SiagaError):
    """A request (API call, command, message) that cannot be done as asked."""


class StorageError(SiagaError):
    """Something could not be made durable or read back: InfluxDB, the spool, a SQLite file."""


class DeliveryError(SiagaError):
    """A peer refused or could not be reached: the broker, the operator API, a receiver."""


class SandboxError(SiagaError):
    """The local servers of the demo and the tests could not be run."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem: where (`devices[3].kind`), what is expected, and the 1-based line."""

    place: str
    message: str
    line: int | None = None


class ConfigFileError(ConfigurationError):
    """A configuration file that cannot be used; `problems` lists every reason."""

    def __init__(self, path: Path | None, problems: Sequence[Problem]) -> None:
        self.path = path
        self.problems = list(problems)
        super().__init__(self.render())

    def render(self) -> str:
        """One line per problem: `FILE:LINE: PLACE: MESSAGE`."""
        return "\n".join(render_problem(self.path, problem) for problem in self.problems)


def render_problem(path: Path | None, problem: Problem) -> str:
    """`FILE:LINE: PLACE: MESSAGE` (no LINE when unknown): errors and warnings alike."""
    where = "" if path is None else str(path)
    if problem.line is not None:
        where = f"{where}:{problem.line}"
    prefix = f"{where}: " if where else ""
    return f"{prefix}{problem.place}: {problem.message}"
