"""The documentation holds together: every relative link in README.md and
docs/**/*.md reaches a file that exists (and, for `page.md#anchor`, a heading
of that page), and the measured figures in docs/performance.md are the ones
rendered from docs/performance/*.json. Pure file checks: no database."""

from __future__ import annotations

import importlib.util
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]

# [text](target "title") and ![alt](target); the target may be wrapped in <...>.
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]"
                         r"\(\s*(<[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
# [label]: target
REFERENCE_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


@dataclass(frozen=True)
class Link:
    line: int
    target: str


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _prose_lines(text: str, blank_code: bool = True) -> list[tuple[int, str]]:
    """(line number, text) of the lines outside fenced code; code spans blanked
    unless ``blank_code`` is false (a heading's anchor keeps their text)."""
    lines: list[tuple[int, str]] = []
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        opening = FENCE.match(line)
        if fence is None and opening:
            fence = opening.group(1)
            continue
        if fence is not None:
            if opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence):
                fence = None
            continue
        if blank_code:
            line = CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)
        lines.append((number, line))
    return lines


def extract_links(text: str) -> list[Link]:
    """Every link target in a markdown text, with its line, outside code."""
    links: list[Link] = []
    for number, line in _prose_lines(text):
        definition = REFERENCE_DEFINITION.match(line)
        if definition:
            links.append(Link(number, definition.group(1).strip("<>")))
            continue
        links.extend(Link(number, m.group(1).strip("<>")) for m in INLINE_LINK.finditer(line))
    return links


def slug(heading: str) -> str:
    """The anchor a heading gets (GitHub's rule): lower case, markup and
    punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(ch for ch in text
                   if ch in " -_" or unicodedata.category(ch)[0] in "LN")
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor of a markdown text's headings, repeated ones numbered -1, -2..."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for _number, line in _prose_lines(text, blank_code=False):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(path: Path, text: str) -> list[str]:
    """One message (file:line: link, what is wrong) per relative link of ``text``,
    the content of ``path``, that does not resolve."""
    problems: list[str] = []
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    for link in extract_links(text):
        if EXTERNAL.match(link.target):
            continue
        file_part, _, anchor = link.target.partition("#")
        file_part = unquote(file_part)
        if not file_part:
            headings = anchors(text)
            target_name = path.name
        else:
            target = (path.parent / file_part).resolve()
            if not target.exists():
                problems.append(f"{where}:{link.line}: {link.target}: no such file")
                continue
            is_page = target.is_file() and target.suffix == ".md"
            headings = anchors(target.read_text(encoding="utf-8")) if is_page else None
            target_name = target.name
        if anchor and headings is not None and anchor not in headings:
            problems.append(f"{where}:{link.line}: {link.target}: no heading #{anchor} in "
                            f"{target_name}")
    return problems


def test_extractor_finds_links_and_skips_code() -> None:
    text = ("See [the guide](docs/dba.md) and ![a chart](img/x.png \"title\").\n"
            "`[not a link](nowhere.md)` is code.\n"
            "```\n[also code](nowhere.md)\n```\n"
            "[ref]: <docs/operations.md#numbers-in-json>\n"
            "[outside](https://example.org/x.md) and [here](#top)\n")
    assert [(link.line, link.target) for link in extract_links(text)] == [
        (1, "docs/dba.md"), (1, "img/x.png"), (6, "docs/operations.md#numbers-in-json"),
        (7, "https://example.org/x.md"), (7, "#top")]


def test_slugs_follow_the_heading_rule() -> None:
    text = ("# Numbers in JSON\n## `monthend verify`\n## Resume, cancel, join\n"
            "## Resume, cancel, join\n## Exit codes: 0, 1, 2\n")
    assert anchors(text) == {"numbers-in-json", "monthend-verify", "resume-cancel-join",
                             "resume-cancel-join-1", "exit-codes-0-1-2"}


def test_a_broken_link_is_named_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "there.md").write_text("# Present\n", encoding="utf-8")
    page = tmp_path / "page.md"
    text = ("# Page\n[ok](there.md#present) [ok too](#page)\n"
            "[gone](missing.md)\n[bad anchor](there.md#absent)\n")
    problems = broken_links(page, text)
    assert len(problems) == 2
    assert problems[0].endswith("page.md:3: missing.md: no such file")
    assert problems[1].endswith("page.md:4: there.md#absent: no heading #absent in there.md")


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path: Path) -> None:
    problems = broken_links(path, path.read_text(encoding="utf-8"))
    assert not problems, "broken links:\n" + "\n".join(problems)


def _render_tool():
    spec = importlib.util.spec_from_file_location("render_performance",
                                                  ROOT / "tools" / "render_performance.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_measured_figures_are_rendered_from_their_json() -> None:
    tool = _render_tool()
    page = ROOT / "docs" / "performance.md"
    current = page.read_text(encoding="utf-8")
    assert tool.render_page(current, tool.load_measurements()) == current, (
        "docs/performance.md is out of date with docs/performance/*.json: "
        "run `python tools/render_performance.py`")


def test_the_render_check_can_fail(tmp_path: Path) -> None:
    tool = _render_tool()
    stale = "intro\n" + "".join(f"<!-- BEGIN {kind} -->\n| an old figure |\n"
                                 f"<!-- END {kind} -->\n" for kind, _render in tool.SECTIONS) \
        + "rest\n"
    rendered = tool.render_page(stale, tool.load_measurements())
    assert rendered != stale
    assert rendered.startswith("intro\n") and rendered.endswith("rest\n")
    assert "| an old figure |" not in rendered
