"""The project's exception types.

``UserError`` and its subclasses are problems with what the user gave us (files, labels, models): the CLI
prints their message on one line and exits with code 2. Anything else is an internal fault and keeps
its traceback.
"""


class UserError(Exception):
    """Bad input from the user; the message is shown as is, on one line."""


class DataError(UserError):
    """An input file or built-in dataset cannot be read as texts (and labels)."""


class LabelSpecError(UserError):
    """The label set is invalid, or the teacher cannot tell its labels apart."""


class ModelError(UserError):
    """A model name is unknown, or a model file is missing, corrupt or not what it claims to be."""


class StoreError(UserError):
    """The label store cannot be opened or does not match the requested run."""


class MissingDependencyError(UserError):
    """An optional dependency is not installed; the message names the install command."""
