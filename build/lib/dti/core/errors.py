"""The errors the command line reports in one line: bad user input (exit 2) and a run stopped by a value that is
not finite (exit 1, the last good checkpoint kept)."""


class InputError(ValueError):
    def __init__(self, field: str, value: object, problem: str):
        self.field, self.value, self.problem = field, value, problem
        super().__init__(f"{field}={value!r}: {problem}")


class NonFiniteError(RuntimeError):
    """A loss, gradient, embedding, image or score that is NaN or infinite: nothing made from it is written."""


class RunInUse(InputError):
    """Another process holds the run directory (or samples folder) this job would write."""
