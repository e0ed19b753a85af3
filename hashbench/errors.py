"""The one exception type a user sees: the CLI prints its message on one line and exits 1.
And the one warning type: printed as one line, `warning: <message>`, wherever it is raised
(the driver or a worker process)."""

import warnings


class HashbenchError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class HashbenchWarning(UserWarning):
    """Something was skipped or redone, and the user should know which file and why."""


_format_warning = warnings.formatwarning


def _one_line(message, category, filename, lineno, line=None):
    if isinstance(category, type) and issubclass(category, HashbenchWarning):
        return f"warning: {message}\n"
    return _format_warning(message, category, filename, lineno, line)


warnings.formatwarning = _one_line
