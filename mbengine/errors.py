"""Exception types of mbengine.

Every error names what is wrong: the argument or tensor, the value or shape
found, and what was expected. Bad call arguments raise :class:`InputError`, a
``ValueError``, so ``except ValueError`` works as users expect.
"""


class MBEngineError(Exception):
    """Base class of every mbengine error."""


class ConfigError(MBEngineError, ValueError):
    """A configuration that is invalid or that the model cannot run."""


class InputError(MBEngineError, ValueError):
    """A bad argument to a model call (shape, dtype, range)."""


class CheckpointError(MBEngineError):
    """A checkpoint that cannot be read or does not fit its config.

    ``problems`` lists every individual problem found, so one error reports
    all missing, unexpected and mis-shaped tensors at once.
    """

    def __init__(self, message: str, problems: list[str] | None = None):
        self.problems = list(problems or [])
        if self.problems:
            message = message + "\n  " + "\n  ".join(self.problems)
        super().__init__(message)


class FormatVersionError(CheckpointError):
    """An engine checkpoint written by a format version this build does not know."""


class PerformanceWarning(UserWarning):
    """The call works, but slower than it should: e.g. int8 on a CPU without int8 dot products."""
