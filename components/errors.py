"""The one base for errors that mean "the user asked for something that cannot be done".

Every component's own error class derives from `UserError`; the jobs print its message as one line and
exit 2 (components.cli). Any other exception is a bug and keeps its traceback.
"""


class UserError(RuntimeError):
    """The message says what was asked, why it cannot be done and, where it can, how to fix it."""
