"""Errors meant for the user: the CLI prints their message on one line and exits non-zero."""


class UserError(Exception):
    """Bad input (file, config, checkpoint, argument). The message is one self-contained line."""


class CheckpointError(UserError):
    """A file that is not a checkpoint we can load, or one whose weights do not fit the model."""


class AudioError(UserError):
    """Unreadable, corrupt, empty or otherwise unusable audio."""
