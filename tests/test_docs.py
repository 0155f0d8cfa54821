"""Run the Python code in docs/*.md, so every page stays true to the library.

Convention for fenced code blocks in docs/*.md:

- A block whose info string is exactly ``python`` runs.
- A block whose info string is ``python no-run`` is shown but not run: code that
  needs a GPU (CuPy) or other hardware. It is still compiled, so it must be valid
  Python. Renderers read only the first word of the info string, so both kinds
  are highlighted as Python.
- Any other ``python ...`` info string is an error (a typo must not silently
  skip a block). Blocks in other languages (bash, text) are ignored.

Each page is one test. Its blocks run in order in one fresh namespace, so a
block may use names defined by the blocks above it, with a temporary directory
as the working directory. A failure names the page, the block number and the
line in the page. Every page must run at least one block.
"""

import re
import traceback
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(DOCS.glob("*.md"))
RUN, SKIP = "python", "python no-run"
FENCE = re.compile(r"^(```+)\s*(.*?)\s*$")


def code_blocks(text):
    """(info string, first code line number (1-based), code) for each fenced block."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, info, start = opening.group(1), opening.group(2), i + 2
        end = i + 1
        while end < len(lines) and lines[end].strip() != fence:
            end += 1
        if end == len(lines):
            raise ValueError(f"unclosed code fence opened at line {i + 1}")
        blocks.append((info, start, "\n".join(lines[i + 1 : end]) + "\n"))
        i = end + 1
    return blocks


def python_blocks(path):
    """(number, first line, code, runs) for each Python block of a page, numbered from 1."""
    found = []
    for info, line, code in code_blocks(path.read_text(encoding="utf-8")):
        if info.split(" ", 1)[0] != "python":
            continue
        if info not in (RUN, SKIP):
            raise ValueError(f"{path.name}, line {line - 1}: unknown code block marker "
                             f"{info!r}; use {RUN!r} or {SKIP!r}")
        found.append((len(found) + 1, line, code, info == RUN))
    return found


def test_there_are_pages():
    assert PAGES, f"no pages found in {DOCS}"


def test_collector_reads_markers(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n```python\na = 1\n```\n```bash\nls\n```\n"
                    "```python no-run\nimport cupy\n```\n````text\n```python\n````\n")
    assert python_blocks(page) == [(1, 3, "a = 1\n", True), (2, 9, "import cupy\n", False)]
    page.write_text("```python norun\nx = 1\n```\n")
    with pytest.raises(ValueError, match="unknown code block marker 'python norun'"):
        python_blocks(page)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_runs(page, tmp_path, monkeypatch, record_property):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs.{page.stem}"}
    executed = skipped = 0
    for number, line, code, runs in python_blocks(page):
        # Leading newlines make tracebacks report the line number in the page itself.
        source = "\n" * (line - 1) + code
        try:
            compiled = compile(source, str(page), "exec")
        except SyntaxError as error:
            pytest.fail(f"{page.name}, block {number} (line {line}): {error}", pytrace=False)
        if not runs:
            skipped += 1
            continue
        failure = None
        try:
            exec(compiled, namespace)
        except Exception as error:
            # the traceback from the page's code on (the exec frame here is left out)
            frames = traceback.format_tb(error.__traceback__.tb_next)
            failure = (f"{page.name}, block {number} (line {line}) raised "
                       f"{type(error).__name__}: {error}\n" + "".join(frames))
        if failure:
            pytest.fail(failure, pytrace=False)
        executed += 1
    record_property("blocks_run", executed)
    record_property("blocks_no_run", skipped)
    assert executed >= 1, f"{page.name} has no runnable python block ({skipped} no-run)"
