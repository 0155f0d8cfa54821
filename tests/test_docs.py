"""Every code block of every page in docs/*.md is collected here, and the Python ones run.

The rule for code in docs/*.md (a page that breaks it fails ``test_page_markup``
with the page and the line):

- Code goes in fenced blocks (three or more backticks or tildes). An indented
  code block cannot name its language, so it is an error.
- Every fence names its language; the info string is one of
  - ``python`` (or ``py``): runs, on any machine, with NumPy. PyTorch is part of
    the ``test`` extra, so blocks that use it run too;
  - ``python gpu`` (or ``py gpu``): needs CuPy and a CUDA device. It runs where
    ``scratchseg.backend.cupy_available()``; elsewhere it is compiled (it must be
    valid Python) and reported as a skipped test that says why. Only GPU blocks
    may use names it defines;
  - ``bash``, ``sh``, ``shell``, ``console``: shell commands, never run here (they
    install packages, train for minutes or need a GPU; the CLI has its own tests).
    A command meant to be run, such as ``scratchseg gradcheck``, may stay
    unexecuted only in one of these;
  - ``text``, ``math``: output, pseudo-code or formulas, never run.

  An untagged fence and any other info string (``python norun``, ``js``) are
  errors: a typo must not silently keep a block from running. Renderers read
  only the first word, so ``python gpu`` is highlighted as Python.

Each Python block is its own test, ``test_block[page:line]``, ``line`` being the
fence's line in the page. A page's blocks run in page order in one namespace
(a block uses names defined by the blocks above it), with one temporary
directory per page as the working directory and ``__file__`` set to the page,
as if the page were a script (a block finds files beside the page through it).
A block whose page has an earlier block that failed is skipped, naming that
block. Tracebacks give line numbers in the page itself.

``EXPECTED_BLOCKS`` holds the number of blocks of each kind per page, and
``test_expected_blocks`` compares it with what the collector finds, so a
broken parser cannot pass by collecting nothing. Update it with the pages.
"""

import re
import traceback
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import pytest

from scratchseg.backend import cupy_available

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(DOCS.glob("*.md"))

# info string -> kind
LANGUAGES = {
    "python": "python", "py": "python",
    "python gpu": "gpu", "py gpu": "gpu",
    "bash": "shell", "sh": "shell", "shell": "shell", "console": "shell",
    "text": "text", "math": "text",
}
RUNNABLE = ("python", "gpu")
GPU_REASON = "needs CuPy and a CUDA device (scratchseg.backend.cupy_available() is False)"

EXPECTED_BLOCKS = {
    "backprop.md": {"python": 19, "text": 1},
    "detection.md": {"python": 9, "shell": 2},
    "gpu.md": {"python": 7, "gpu": 4},
    "gradcheck.md": {"python": 12},
    "instances.md": {"python": 4, "shell": 2, "text": 2},
    "own-data.md": {"python": 7, "shell": 2, "text": 1},
    "performance.md": {"python": 3, "shell": 3},
    "trace.md": {"python": 4},
    "unet.md": {"python": 11},
}

OPENING = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
LIST_ITEM = re.compile(r"^(?P<marker> *(?:[-+*]|\d{1,9}[.)]))(?P<gap> +|$)")
HEADING = re.compile(r"^ {0,3}#{1,6}(?: |$)")


class Block(NamedTuple):
    page: str      # file name, "unet.md"
    line: int      # line of the opening fence, 1-based
    info: str      # the info string, stripped
    kind: str      # "python", "gpu", "shell", "text"; "" when the info string is not allowed
    code: str
    code_line: int  # line of the first line of code, 1-based


def parse(text, page="page.md"):
    """(blocks, problems): every fenced block of a Markdown text, and the rule's violations.

    A small CommonMark subset: fences of 3 or more backticks or tildes, closed by
    a fence of the same character at least as long; list items, whose content
    may be indented (an indented code block inside one is 4 columns deeper than
    its content). Tabs count as 4 spaces.
    """
    lines = [line.expandtabs(4) for line in text.splitlines()]
    blocks, problems = [], []
    items = []              # content columns of the open list items, innermost last
    after_break = True      # the previous line ends a block: blank, heading, fence or start
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            after_break, i = True, i + 1
            continue
        indent = len(line) - len(line.lstrip(" "))
        if after_break:
            while items and indent < items[-1]:
                items.pop()             # a line left of an item's content closes it
        code_column = (items[-1] if items else 0) + 4
        if after_break and indent >= code_column:
            problems.append(f"{page}, line {i + 1}: indented code block; use a fence that "
                            f"names the language")
            while i < len(lines) and (not lines[i].strip() or
                                      len(lines[i]) - len(lines[i].lstrip(" ")) >= code_column):
                i += 1
            after_break = True
            continue
        opening = OPENING.match(line) if indent < code_column else None
        if opening and not (opening["fence"][0] == "`" and "`" in opening["info"]):
            fence, info = opening["fence"], opening["info"].strip()
            closing = re.compile(rf"^ *{re.escape(fence[0])}{{{len(fence)},}} *$")
            end = i + 1
            while end < len(lines) and not closing.match(lines[end]):
                end += 1
            if end == len(lines):
                problems.append(f"{page}, line {i + 1}: code fence {fence} is never closed")
                break
            width = len(opening["indent"])
            code = "".join(re.sub(rf"^ {{0,{width}}}", "", body) + "\n"
                           for body in lines[i + 1:end])
            kind = LANGUAGES.get(info, "")
            if not info:
                problems.append(f"{page}, line {i + 1}: code fence without a language; "
                                f"tag it ({', '.join(sorted(LANGUAGES))})")
            elif not kind:
                problems.append(f"{page}, line {i + 1}: unknown code block language {info!r}; "
                                f"use one of {', '.join(sorted(LANGUAGES))}")
            blocks.append(Block(page, i + 1, info, kind, code, i + 2))
            after_break, i = True, end + 1
            continue
        item = LIST_ITEM.match(line)
        if item and (after_break or not items or indent < items[-1] + 4):
            while items and indent < items[-1]:
                items.pop()
            gap = len(item["gap"])
            items.append(len(item["marker"]) + (gap if 1 <= gap <= 4 else 1))
        after_break = bool(HEADING.match(line))
        i += 1
    return blocks, problems


def page_blocks(path):
    return parse(path.read_text(encoding="utf-8"), path.name)


COLLECTED = {path.name: page_blocks(path) for path in PAGES}
RUNNABLE_BLOCKS = [block for blocks, _ in COLLECTED.values() for block in blocks
                   if block.kind in RUNNABLE]


def test_there_are_pages():
    assert PAGES, f"no pages found in {DOCS}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_markup(page):
    _, problems = COLLECTED[page.name]
    assert not problems, "\n".join(problems)


def test_expected_blocks():
    found = {name: dict(Counter(block.kind or "invalid" for block in blocks))
             for name, (blocks, _) in COLLECTED.items()}
    assert found == EXPECTED_BLOCKS, (
        "blocks per page and kind differ from EXPECTED_BLOCKS: update the table with the "
        "pages, or fix the collector")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_runs_something_everywhere(page):
    blocks, _ = COLLECTED[page.name]
    assert any(block.kind == "python" for block in blocks), \
        f"{page.name} has no Python block that runs on every machine"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_images_exist_and_are_small(page):
    text = page.read_text(encoding="utf-8")
    for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+)", text):
        if "://" in target:
            continue
        image = page.parent / target
        assert image.is_file(), f"{page.name}: image {target} is missing"
        assert image.stat().st_size < 200_000, f"{page.name}: image {target} is 200 KB or more"


PAGE = """\
Text with `inline` code and a list:

1. an item

    continued four columns in: a paragraph of the item, not code
2. an item with a fence in it:

   ```python
   a = 1
   if a:
       b = 2
   ```

- item

      indented code in a list item

~~~bash
scratchseg gradcheck
~~~

````text
```python
not a block of its own
```
````

```py gpu
import cupy
```

```
untagged
```

```python norun
x = 1
```

## Heading
    indented code after a heading
A paragraph.

    indented code after a blank line

```js
let a;
"""


def test_collector():
    blocks, problems = parse(PAGE, "page.md")
    assert [(b.line, b.info, b.kind, b.code_line) for b in blocks] == [
        (8, "python", "python", 9), (18, "bash", "shell", 19), (22, "text", "text", 23),
        (28, "py gpu", "gpu", 29), (32, "", "", 33), (36, "python norun", "", 37)]
    assert blocks[0].code == "a = 1\nif a:\n    b = 2\n"          # dedented by the fence's indent
    assert blocks[2].code == "```python\nnot a block of its own\n```\n"
    assert problems == [
        "page.md, line 16: indented code block; use a fence that names the language",
        "page.md, line 32: code fence without a language; tag it "
        f"({', '.join(sorted(LANGUAGES))})",
        "page.md, line 36: unknown code block language 'python norun'; use one of "
        f"{', '.join(sorted(LANGUAGES))}",
        "page.md, line 41: indented code block; use a fence that names the language",
        "page.md, line 44: indented code block; use a fence that names the language",
        "page.md, line 46: code fence ``` is never closed",
    ]


class PageRun:
    """One page's namespace and working directory, and the outcome of each block run so far."""

    def __init__(self, page, workdir):
        self.namespace = {"__name__": f"docs.{Path(page).stem}", "__file__": str(DOCS / page)}
        self.workdir = workdir
        self.outcomes = {}          # fence line -> None (ran), "skipped", or a failure message

    def run(self, block):
        path = DOCS / block.page
        # Leading newlines make tracebacks report the line number in the page itself.
        source = "\n" * (block.code_line - 1) + block.code
        try:
            compiled = compile(source, str(path), "exec")
        except SyntaxError as error:
            outcome = f"{block.page}, block at line {block.line}: {error}"
        else:
            if block.kind == "gpu" and not cupy_available():
                outcome = "skipped"
            else:
                outcome = None
                try:
                    exec(compiled, self.namespace)
                except Exception as error:
                    # the traceback from the page's code on (the exec frame here is left out)
                    frames = traceback.format_tb(error.__traceback__.tb_next)
                    outcome = (f"{block.page}, block at line {block.line} raised "
                               f"{type(error).__name__}: {error}\n" + "".join(frames))
        self.outcomes[block.line] = outcome
        return outcome


_RUNS = {}


@pytest.mark.parametrize("block", RUNNABLE_BLOCKS, ids=lambda b: f"{b.page}:{b.line}")
def test_block(block, tmp_path_factory, monkeypatch):
    if block.page not in _RUNS:
        _RUNS[block.page] = PageRun(block.page, tmp_path_factory.mktemp(Path(block.page).stem))
    page = _RUNS[block.page]
    monkeypatch.chdir(page.workdir)
    for earlier in RUNNABLE_BLOCKS:
        if earlier.page != block.page or earlier.line >= block.line:
            continue
        if earlier.line not in page.outcomes:   # not selected, or run in another process
            page.run(earlier)
        if page.outcomes[earlier.line] not in (None, "skipped"):
            pytest.skip(f"the block at line {earlier.line} of {block.page}, above this one, "
                        f"failed")
    outcome = page.run(block)
    if outcome == "skipped":
        pytest.skip(f"{block.page}, block at line {block.line}: {GPU_REASON}")
    if outcome is not None:
        pytest.fail(outcome, pytrace=False)


def test_a_failing_block_names_the_page_and_its_line(tmp_path):
    blocks, problems = parse("Text.\n\n```python\nx = 1\n\ny = x / 0\n```\n", "page.md")
    assert not problems and len(blocks) == 1
    outcome = PageRun("page.md", tmp_path).run(blocks[0])
    assert outcome.startswith("page.md, block at line 3 raised ZeroDivisionError")
    assert "page.md\", line 6" in outcome            # the traceback counts lines of the page
