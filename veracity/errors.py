"""One exception hierarchy; every message says what is wrong and what to do about it."""


class VeracityError(Exception):
    """Base of every error Veracity reports to a user (the CLI prints it without a traceback)."""

    exit_code = 1


class UsageError(VeracityError):
    """The user asked for something that does not exist or cannot work (unknown model, bad flag)."""

    exit_code = 2


class InputError(UsageError):
    """A job's input is malformed: unreadable file, bad JSON, wrong fields, too long."""


class ModelError(VeracityError):
    """A model's weights could not be loaded or converted to the exact op set."""


class ChainError(VeracityError):
    """A chain call failed: a contract reverted (the reason is in the message) or the node is down."""


class SignatureError(VeracityError):
    """A signature cannot stand for its signer: malformed, or malleable (a high-s twin)."""
