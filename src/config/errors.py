"""Errors that are the user's to fix: reported as one line with the fix, exit code 2."""


class ConfigError(ValueError):
    """A config value that composes but cannot work (e.g. n_action_steps > horizon)."""
