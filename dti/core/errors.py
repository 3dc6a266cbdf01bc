"""Bad user input: one line that names the field and the value, reported by the CLI with a non-zero exit."""


class InputError(ValueError):
    def __init__(self, field: str, value: object, problem: str):
        self.field, self.value, self.problem = field, value, problem
        super().__init__(f"{field}={value!r}: {problem}")
