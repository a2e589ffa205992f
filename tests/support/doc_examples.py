"""The code blocks of a Markdown page as examples to run, and how their sample output is compared.

A page's blocks, in order:

- ```console: `$ command` lines (a trailing backslash continues one), each followed by the output
  it prints (stdout, then stderr); no output shown means none is compared. `# exits N` in a
  command expects that exit status (0 otherwise).
- ```sh: one command per line, outputs not shown.
- ```python: executed in one namespace per page; a ```text block right after it is its standard
  output; `print(...)  # prints: TEXT` checks that one print.
- Anything else, or a block preceded by `<!-- not run: REASON -->`, is not run (the reason is
  required); `<!-- skip PREFIX: REASON -->` before a block skips its commands starting with PREFIX.

Sample output matches line by line: text exactly, `...` or `…` any text, decimal numbers within
SCORE_TOLERANCE (scores differ in the last digits between CPUs), a last line `...` any further lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

# Scores are printed with 4 decimals; fp32 sums differ between CPUs far below this.
SCORE_TOLERANCE = 1e-3

_FENCE = re.compile(r"^```(\S*)\s*$")
_MARKER = re.compile(r"^<!--\s*(not run|skip)\b\s*(.*?)\s*-->\s*$")
_NUMBER = r"[-+]?\d+\.\d+"
_WILDCARDS = ("...", "…")
EXIT_STATUS = re.compile(r"#\s*exits (\d+)")


@dataclass
class Command:
    """One shell command of a block and the output lines shown after it."""

    text: str
    line: int
    output: list[str] = field(default_factory=list)

    @property
    def exit_status(self) -> int:
        """The exit status the page says the command ends with (0 unless `# exits N`)."""
        found = EXIT_STATUS.search(self.text)
        return int(found.group(1)) if found else 0


@dataclass
class Block:
    """A fenced code block of `page` starting at `line` (1-based)."""

    page: str
    line: int
    language: str
    text: str
    not_run: str | None = None  # the reason, when marked not run
    skips: list[tuple[str, str]] = field(default_factory=list)  # (command prefix, reason)
    output: list[str] | None = None  # a python block's expected stdout (the text block after it)

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    def commands(self) -> list[Command]:
        """The block's commands (console: with their shown output; sh: none shown)."""
        commands: list[Command] = []
        pending = ""
        start = self.line
        for number, raw in enumerate(self.text.splitlines(), start=self.line + 1):
            if pending:
                pending += "\n" + raw
            elif self.language == "console" and raw.startswith("$ "):
                pending = raw[2:]
                start = number
            elif self.language == "sh" and raw.strip() and not raw.lstrip().startswith("#"):
                pending = raw
                start = number
            elif commands and self.language == "console":
                commands[-1].output.append(raw)
                continue
            else:
                continue
            if pending.endswith("\\"):
                continue
            commands.append(Command(pending, start))
            pending = ""
        return commands

    def skip_reason(self, command: str) -> str | None:
        """Why `command` is not run here, if the page says so."""
        return next((reason for prefix, reason in self.skips if command.startswith(prefix)), None)


def blocks_of(path: Path, page: str) -> list[Block]:
    """Every fenced block of the Markdown file `path` (named `page` in messages), with its markers;
    a ```text block right after a python block becomes that block's `output`."""
    found: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    markers: list[tuple[str, str]] = []
    index = 0
    previous_end = -1
    while index < len(lines):
        line = lines[index]
        marker = _MARKER.match(line)
        fence = _FENCE.match(line)
        if marker:
            markers.append((marker.group(1), marker.group(2)))
        elif fence:
            end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
            text = "\n".join(lines[index + 1 : end])
            block = Block(page, index + 1, fence.group(1), text)
            for kind, detail in markers:
                if kind == "not run":
                    block.not_run = detail.lstrip(":").strip()
                else:
                    prefix, _, reason = detail.partition(":")
                    block.skips.append((prefix.strip(), reason.strip()))
            markers = []
            previous = found[-1] if found else None
            follows = previous is not None and all(not lines[i].strip() for i in range(previous_end + 1, index))
            if block.language == "text" and previous is not None and previous.language == "python" and follows:
                previous.output = text.splitlines()
            else:
                found.append(block)
            previous_end = end
            index = end
        elif line.strip():
            markers = []
        index += 1
    return found


def line_matches(actual: str, expected: str, tolerance: float = SCORE_TOLERANCE) -> bool:
    """Whether the printed line `actual` is the sample line `expected` (see the module docstring)."""
    pattern: list[str] = []
    numbers: list[float] = []
    for token in re.split(rf"(\.\.\.|…|{_NUMBER})", expected.rstrip()):
        if token in _WILDCARDS:
            pattern.append(".*?")
        elif re.fullmatch(_NUMBER, token):
            pattern.append(r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)")
            numbers.append(float(token))
        else:
            pattern.append(re.escape(token))
    match = re.fullmatch("".join(pattern), actual.rstrip())
    if match is None:
        return False
    return all(abs(float(got) - wanted) <= tolerance for got, wanted in zip(match.groups(), numbers, strict=True))


def output_mismatch(actual: list[str], expected: list[str]) -> str | None:
    """None when the printed `actual` lines are the sample `expected` ones, else what differs."""
    more = bool(expected) and expected[-1].strip() in _WILDCARDS
    shown = expected[:-1] if more else expected
    if len(actual) < len(shown) or (not more and len(actual) != len(shown)):
        return f"{len(actual)} lines printed, {len(shown)} shown:\n" + "\n".join(actual)
    for got, wanted in zip(actual, shown, strict=False):
        if not line_matches(got, wanted):
            return f"printed {got!r}\n  shown {wanted!r}\nall printed:\n" + "\n".join(actual)
    return None
