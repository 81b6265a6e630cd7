"""The README and docs/*.md: the README stays short and starts with the two commands a newcomer
runs; every relative link and image points at a file that exists (and at a heading that exists,
for an anchor into a Markdown file); every repository path written in backticks exists.

docs/architecture.md is written separately: while it does not exist, links to it are skipped;
once it exists, they are checked like any other.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_BYTES = 15 * 1024
PENDING = {DOCS / "architecture.md"}  # skipped only while absent
FIRST_COMMANDS = ('pip install -e . && .venv/bin/s43-ray run',
                  'pip install -e ".[test]" && .venv/bin/pytest')

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
REPO_PATH = re.compile(
    r"(?<![\w./~$-])((?:s43_ray/[\w/]+(?:\.py|/))|(?:(?:infra|tests|benchmarks|docs|examples)/[\w./*-]*))")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def split_fences(text: str) -> tuple[str, list[tuple[str, str]]]:
    """``text`` with its fenced code blocks blanked out, and the blocks as (info, body)."""
    prose: list[str] = []
    blocks: list[tuple[str, str]] = []
    fence: str | None = None
    info = ""
    body: list[str] = []
    for line in text.splitlines():
        match = FENCE.match(line)
        if fence is None and match:
            fence, info, body = match.group(1), match.group(2).strip(), []
            prose.append("")
        elif fence is not None and match and match.group(1).startswith(fence) \
                and not match.group(2).strip():
            blocks.append((info, "\n".join(body)))
            fence = None
            prose.append("")
        elif fence is not None:
            body.append(line)
            prose.append("")
        else:
            prose.append(line)
    return "\n".join(prose), blocks


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup and punctuation (but '-' and '_') dropped,
    lower-case, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    prose, _ = split_fences(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose.splitlines():
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    found |= set(re.findall(r'<a (?:id|name)="([^"]+)"', prose))
    return found


def relative_links(path: Path) -> list[str]:
    prose, _ = split_fences(path.read_text(encoding="utf-8"))
    prose = CODE_SPAN.sub("", prose)  # a link written inside backticks is not a link
    return [target for target in LINK.findall(prose) if not SCHEME.match(target)]


def backticked_paths(path: Path) -> list[str]:
    prose, _ = split_fences(path.read_text(encoding="utf-8"))
    found = []
    for span in CODE_SPAN.finditer(prose):
        for match in REPO_PATH.finditer(span.group(2)):
            found.append(match.group(1).rstrip(".,;:)"))
    return found


def test_readme_is_short() -> None:
    size = README.stat().st_size
    assert size <= MAX_README_BYTES, (
        f"README.md is {size} bytes; expected at most {MAX_README_BYTES}: move reference "
        "material into docs/")


def test_readme_starts_with_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    _, blocks = split_fences(text)
    assert text.startswith("# s43_ray\n"), "README.md must start with '# s43_ray'"
    assert blocks, "README.md has no code block"
    info, body = blocks[0]
    assert info == "bash", f"the README's first code block is {info!r}; expected bash"
    for command in FIRST_COMMANDS:
        assert command in body, f"the README's first code block lacks {command!r}"
    first_block_line = text.splitlines().index("```bash")
    before = text.splitlines()[1:first_block_line]
    assert not [line for line in before if HEADING.match(line)], \
        "the two commands must come before any section of the README"


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_images_resolve(path: Path) -> None:
    broken = []
    for target in relative_links(path):
        page, _, anchor = target.partition("#")
        dest = (path.parent / page).resolve() if page else path
        if dest in PENDING and not dest.exists():
            continue
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(ROOT)}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: {dest.relative_to(ROOT)} has no heading #{anchor}")
    assert not broken, f"{path.relative_to(ROOT)}: " + "; ".join(broken)


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_backticked_repository_paths_exist(path: Path) -> None:
    missing = []
    for written in backticked_paths(path):
        candidate = written.partition("#")[0]
        target = ROOT / candidate
        if target in PENDING and not target.exists():
            continue
        exists = any(ROOT.glob(candidate)) if "*" in candidate else target.exists()
        if not exists:
            missing.append(written)
    assert not missing, f"{path.relative_to(ROOT)} names paths that do not exist: {missing}"


def test_the_docs_index_lists_every_page() -> None:
    links = {(ROOT / link.partition("#")[0]).resolve() for link in relative_links(README)}
    pages = set(DOCS.glob("*.md")) | PENDING
    unlisted = sorted(str(p.relative_to(ROOT)) for p in pages if p.resolve() not in links)
    assert not unlisted, f"README.md does not link to {unlisted}"
