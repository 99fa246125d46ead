"""Errors that mean "the user's input or config is wrong" (CLI exit code 2)."""


class HybridInputError(ValueError):
    """Bad data, config or arguments. The message is one line that names the
    problem and the fix; the CLI prints it and exits with code 2."""
