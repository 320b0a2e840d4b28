"""The documentation holds together: the site under docs/ builds with `mkdocs build --strict` (a link to a
missing page or heading fails it), README.md stays a short front page whose quick start is `make demo` and
`make test`, every link in README.md reaches a file (and heading) that exists, the links from docs/ to files
outside it (which start with `/`, read by GitHub from the repository root, and which mkdocs lets pass) do
too, and mkdocs.yml's nav lists exactly the pages in docs/."""

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
MAX_README_LINES = 250

LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")  # [text](target) and ![alt](target)
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _unfenced(path: Path) -> list[str]:
    """The lines of a Markdown file outside fenced code blocks."""
    lines, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def _links(path: Path) -> list[str]:
    """The targets of a Markdown file's links and images, those inside code left out."""
    prose = (re.sub(r"`[^`]*`", "``", line) for line in _unfenced(path))
    return [m.group(1) for line in prose for m in LINK.finditer(line)]


def _slug(heading: str) -> str:
    """A heading's id as GitHub makes it, and as mkdocs.yml's toc slugify (pymdownx.slugs, case lower) does:
    the text without markup, lower-cased, with everything but word characters, hyphens and spaces dropped,
    and spaces turned into hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = re.sub(r"<[^>]*>", "", text).replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    """The ids of every heading of a Markdown file (a repeated one gets -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    ids = set()
    for line in _unfenced(path):
        if match := HEADING.match(line):
            slug = _slug(match.group(2))
            ids.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
            seen[slug] = seen.get(slug, 0) + 1
    return ids


def _broken(source: Path, target: str) -> str | None:
    """Why ``target`` (a link in ``source`` to a path from the repository root) does not reach a file and
    heading, or None when it does."""
    path, _, anchor = target.partition("#")
    dest = (ROOT / path.lstrip("/")).resolve()
    if not dest.exists():
        return f"{source.name}: {target}: no such file"
    if anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
        return f"{source.name}: {target}: no heading #{anchor} in {dest.relative_to(ROOT)}"
    return None


def _external(target: str) -> bool:
    return target.startswith(("http://", "https://", "mailto:", "#"))


def test_the_site_builds_strictly(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").exists()


def test_the_readme_is_a_front_page_whose_quick_start_is_make_demo_and_make_test():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_README_LINES, "README.md is the front page: move detail into docs/"
    quick = re.search(r"^## Quick start\n+```bash\n(.*?)\n```", text, re.S | re.M)
    assert quick, "README.md has no `## Quick start` with a bash block"
    commands = [line.split("#")[0].strip() for line in quick.group(1).splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]


def test_every_link_in_the_readme_reaches_a_file_and_heading():
    targets = [t for t in _links(README) if not _external(t)]
    assert targets, "README.md links nowhere"
    problems = [p for t in targets if (p := _broken(README, t))]
    problems += [f"README.md: {t}: no such heading" for t in _links(README)
                 if t.startswith("#") and t[1:] not in _anchors(README)]
    assert not problems, "\n".join(problems)


def test_every_link_from_the_docs_to_the_repository_reaches_a_file_and_heading():
    # mkdocs checks the links between pages; those that leave docs/ start with `/` and are checked here
    problems = []
    for page in sorted(DOCS.glob("*.md")):
        for target in _links(page):
            if target.startswith("/"):
                problems.append(_broken(page, target))
    assert not [p for p in problems if p], "\n".join(p for p in problems if p)


class _Loader(yaml.SafeLoader):
    """mkdocs.yml with its `!!python/...` tags read as None (only the nav matters here)."""


_Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)


def _nav_pages(nav) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [p for value in nav.values() for p in _nav_pages(value)]
    return [p for item in nav for p in _nav_pages(item)]


def test_the_nav_lists_exactly_the_pages_in_docs():
    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=_Loader)
    nav = _nav_pages(config["nav"])
    assert len(nav) == len(set(nav)), f"a page is listed twice: {nav}"
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    assert sorted(nav) == pages
