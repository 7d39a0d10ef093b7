"""Named exceptions. Every message says what went wrong and what to do; the CLI prints it as one line."""


class HashaeError(Exception):
    """Base of every error the user can cause and fix."""


class ConfigError(HashaeError):
    """A configuration value is invalid or unknown (unknown kind, bad size, ...)."""


class CodeError(HashaeError):
    """A binary code array has the wrong dtype, shape or bit count."""


class DataError(HashaeError):
    """Input data cannot be read or decoded (missing file, not an image, wrong format)."""


class CheckpointError(HashaeError):
    """A model checkpoint folder is missing, incomplete, tampered with or of an unknown kind."""


class TrainingError(HashaeError):
    """Training failed (NaN loss, empty data set, ...)."""
