"""A batch's jobs file: one JSON object per line, each read and checked on its own.

    {"prompt": "a red circle on a blue background", "id": "circle", "seed": 7, "num_images": 2, "steps": 20}

Fields: `prompt` (required) and any of `id`, `seed`, `negative_prompt`, `steps`, `guidance_scale`, `height`,
`width`, `scheduler`, `num_images`; unset settings come from the pipeline. A job's images are a function of its
line alone: `seed` defaults to 0 (image k is drawn from seed + k, as `diffstack generate` does), `id` to a hash
of the line's settings, so neither depends on where the line sits in the file. A line that cannot run (not
JSON, an unknown field, a value out of range, a size or scheduler the pipeline refuses, an id used before) is
reported with its line number and left out; the others run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, ValidationError, field_validator

from core.errors import DiffstackError, FewStepsWarning, InputError
from core.generation import MAX_SEED, Settings
from core.pipeline import Pipeline
from core.recipe import MAX_PROMPT_CHARS
from core.validation import describe_errors

MAX_LINE_CHARS = 100_000
MAX_IMAGES_PER_JOB = 1000
ID_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
"""Job ids name files (`<id>-<k>.png`): letters, digits, `.`, `_`, `-`, at most 100, not starting with `.`;
two ids may not differ only in case (they would share a file on a case-insensitive filesystem)."""


class Job(BaseModel):
    """One line of a jobs file, as written (settings not given are None: the pipeline's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: StrictStr = Field(max_length=MAX_PROMPT_CHARS)
    id: StrictStr | None = Field(None, min_length=1, max_length=100)
    seed: StrictInt = Field(0, ge=0, le=MAX_SEED)
    negative_prompt: StrictStr | None = Field(None, max_length=MAX_PROMPT_CHARS)
    steps: StrictInt | None = Field(None, ge=1)
    guidance_scale: StrictFloat | None = Field(None, ge=0, allow_inf_nan=False)
    height: StrictInt | None = Field(None, gt=0)
    width: StrictInt | None = Field(None, gt=0)
    scheduler: StrictStr | None = Field(None, min_length=1, max_length=200)
    num_images: StrictInt = Field(1, ge=1, le=MAX_IMAGES_PER_JOB)

    @field_validator("id")
    @classmethod
    def _names_a_file(cls, value: str | None) -> str | None:
        if value is not None and (value.startswith(".") or not set(value) <= ID_CHARACTERS):
            raise ValueError("an id is letters, digits, '.', '_' and '-', not starting with '.'")
        return value

    def default_id(self) -> str:
        """A 16-hex-digit hash of the job's fields other than `id`: the id of a line that gives none."""
        fields = self.model_dump(exclude={"id"})
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ResolvedJob:
    """A job that can run: its id, line number, the settings the pipeline resolved for it (one prompt,
    `num_images` images from seed, seed + 1, …) and the pipeline's warnings about them (fewer steps than the
    rule needs on it)."""

    id: str
    line: int
    settings: Settings
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class BadLine:
    """A line left out: its 1-based number and why, in one line."""

    line: int
    problem: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.problem}"


def read_jobs(path: Path, pipe: Pipeline) -> tuple[list[ResolvedJob], list[BadLine]]:
    """Every line of `path` (blank lines skipped) → (the jobs that can run on `pipe`, in file order; the lines
    left out and why). An InputError if the file cannot be read at all."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark some editors write is not line 1's
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the jobs file {path}: {exc}", hint="give a UTF-8 JSON-lines file") from None
    jobs: list[ResolvedJob] = []
    bad: list[BadLine] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            job = resolve(parse_line(line), number, pipe)
        except DiffstackError as exc:
            bad.append(BadLine(number, str(exc).splitlines()[0]))
            continue
        if job.id.casefold() in first_line:
            bad.append(BadLine(number, f"id {job.id!r} is already used by line {first_line[job.id.casefold()]}"
                                       " (ids are compared ignoring case: they name files)"))  # fmt: skip
            continue
        first_line[job.id.casefold()] = number
        jobs.append(job)
    return jobs, bad


def parse_line(line: str) -> Job:
    """One line → a Job, or an InputError saying what is wrong with it."""
    if len(line) > MAX_LINE_CHARS:
        raise InputError(f"the line is {len(line)} characters long; the limit is {MAX_LINE_CHARS}")
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(data, dict):
        raise InputError(f"a job is a JSON object with a prompt, not {type(data).__name__}")
    try:
        return Job.model_validate(data)
    except ValidationError as exc:
        raise InputError("; ".join(describe_errors(exc, fields=Job.model_fields))) from None


def resolve(job: Job, line: int, pipe: Pipeline) -> ResolvedJob:
    """The settings `pipe` resolves for `job` (its defaults filled in, every value checked), or an InputError.
    The job's images are made `--batch-size` at a time, so the pipeline's limit on images per call does not
    apply to `num_images` (`MAX_IMAGES_PER_JOB` does)."""
    if job.seed + job.num_images - 1 > MAX_SEED:
        raise InputError(f"seed {job.seed} + num_images {job.num_images} runs past the last seed, 2⁶⁴ - 1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FewStepsWarning)
        settings = pipe.settings(
            job.prompt, seed=job.seed, steps=job.steps, guidance_scale=job.guidance_scale,
            negative_prompt=job.negative_prompt, num_images=1, height=job.height, width=job.width,
            scheduler=job.scheduler,
        )  # fmt: skip
    notes = tuple(str(w.message) for w in caught if issubclass(w.category, FewStepsWarning))
    settings = dataclasses.replace(settings, num_images=job.num_images)
    return ResolvedJob(job.id or job.default_id(), line, settings, notes)
