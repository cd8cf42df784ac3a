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
    all missing, unexpected and mis-shaped tensors at once; the message shows
    the first :data:`SHOWN` of them and counts the rest. ``hint``, when given,
    is the likely cause or what to do, shown last.
    """

    SHOWN = 10

    def __init__(self, message: str, problems: list[str] | None = None, hint: str | None = None):
        self.problems = list(problems or [])
        self.hint = hint
        lines = self.problems[: self.SHOWN]
        if len(self.problems) > self.SHOWN:
            lines.append(f"... and {len(self.problems) - self.SHOWN} more ({len(self.problems)} problems)")
        if hint:
            lines.append(hint)
        if lines:
            message = message + "\n  " + "\n  ".join(lines)
        super().__init__(message)


class FormatVersionError(CheckpointError):
    """An engine checkpoint written by a format version this build does not know."""


class PerformanceWarning(UserWarning):
    """The call works, but slower than it should: e.g. int8 on a CPU without int8 dot products."""
