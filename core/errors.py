"""The error hierarchy: every failure a user can cause or fix is a `DiffstackError`.

Each message names the thing (plugin and its package, file, key, field), what was expected, what was
found, and how to fix it. `exit_code` is what the CLI exits with: 2 for bad input or usage, 1 otherwise.
"""

from __future__ import annotations


class DiffstackError(Exception):
    """Root of all diffstack errors. `hint` is the suggested fix, printed on its own line."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\n  fix: {hint}")


class PluginError(DiffstackError):
    """A plugin failed to load, clashes with another one, or broke its hook contract."""


class PluginWarning(UserWarning):
    """A plugin was skipped (it failed to load) or disabled (its kind/name clashes with another plugin's).
    Python shows each one once per process; `diffstack --strict` and `strict=True` make them errors."""


class SwapWarning(UserWarning):
    """A scheduler swap dropped a setting the pipeline declares for its scheduler: the new rule lacks that
    field or refuses its value (`core.scheduler_swap`)."""


class FewStepsWarning(UserWarning):
    """A call runs a scheduler at fewer steps than its pipeline declares it needs to draw the prompt
    (`fewest_steps` in the registry, as the scheduler lab measures it)."""


class UnknownComponentError(PluginError):
    """No plugin provides the requested kind/name (a usage error: the name is misspelled or not installed)."""

    exit_code = 2


class RegistryError(DiffstackError):
    """A registry file is malformed. `problems` holds every problem found, each with its path; a problem of
    several lines (one error's own list) is indented under its first."""

    exit_code = 2

    def __init__(self, message: str, problems: list[str] | None = None, *, hint: str | None = None) -> None:
        self.problems = list(problems or [])
        listed = "\n".join("  - " + problem.replace("\n", "\n    ") for problem in self.problems)
        body = message if not self.problems else message + "\n" + listed
        super().__init__(body, hint=hint)


class ConfigError(DiffstackError):
    """A component's config does not validate against its plugin's Config model."""

    exit_code = 2


class WeightsError(DiffstackError):
    """A checkpoint is missing, in a refused format, or does not match the component's parameters."""

    exit_code = 2


class InputError(DiffstackError):
    """A call got an argument it cannot use (wrong shape, size, dtype, device, or value)."""

    exit_code = 2
