"""The README and docs/: every relative link reaches a file of the repository (and a heading,
where it names one), and the README's test command is the one CI runs."""
import re
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^(```|~~~)")
_CODE_SPAN = re.compile(r"(`+).*?\1")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def unfenced(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    out, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line.lstrip()):
            fenced = not fenced
        elif not fenced:
            out.append((number, line))
    return out


def prose_lines(text: str) -> list[tuple[int, str]]:
    """Lines outside fenced code blocks, with inline code spans blanked."""
    return [(n, _CODE_SPAN.sub("", line)) for n, line in unfenced(text)]


def links(text: str) -> list[tuple[int, str]]:
    return [(n, m.group(1)) for n, line in prose_lines(text) for m in _LINK.finditer(line)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = _CODE_SPAN.sub(lambda m: m.group(0).strip("`"), heading.strip()).lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(text: str) -> set[str]:
    found, seen = set(), {}
    for _, line in unfenced(text):
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken(page: Path, root: Path = ROOT) -> list[str]:
    """Each relative link of the page that reaches no file, or no heading, of the repository."""
    problems = []
    for number, target in links(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):      # http:, https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        where = f"{page.relative_to(root)}:{number}: {target}"
        if not dest.is_relative_to(root) or not dest.exists():
            problems.append(f"{where} (no such file)")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest.read_text(encoding="utf-8")):
            problems.append(f"{where} (no such heading)")
    return problems


def test_every_relative_link_reaches_a_file_and_heading():
    assert len(PAGES) >= 10                      # the README and the manual's pages
    problems = [p for page in PAGES for p in broken(page)]
    assert problems == []


def test_the_link_check_finds_what_is_broken(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.png").write_bytes(b"")
    page = tmp_path / "docs" / "p.md"
    page.write_text("# Top `x`, here\n\n## A B\n\n![fig](a.png) [ok](#top-x-here) [ok](p.md#a-b)\n"
                    "[gone](b.md) [up](../../outside.md) [bad](#nowhere) [web](https://example.com/x)\n"
                    "`[code](c.md)`\n```\n[fenced](d.md)\n```\n", encoding="utf-8")
    assert [t for _, t in links(page.read_text())] == ["a.png", "#top-x-here", "p.md#a-b", "b.md",
                                                      "../../outside.md", "#nowhere", "https://example.com/x"]
    assert broken(page, tmp_path) == ["docs/p.md:6: b.md (no such file)",
                                      "docs/p.md:6: ../../outside.md (no such file)",
                                      "docs/p.md:6: #nowhere (no such heading)"]


def test_slugs_follow_github():
    assert slug("The CUDA source on the CPU, and a stand-in device") == \
        "the-cuda-source-on-the-cpu-and-a-stand-in-device"
    assert slug("2026-11-27, CPU, after the lean step (issue: performance)") == \
        "2026-11-27-cpu-after-the-lean-step-issue-performance"
    assert slug("The homework's exercise 2, step by step") == "the-homeworks-exercise-2-step-by-step"


def test_the_readme_test_command_is_the_one_ci_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    in_readme = [line for line in readme if line.startswith("python3 -m venv") and "pytest" in line]
    marker = ci.index("# The README's test command:")
    assert len(in_readme) == 1
    assert in_readme[0] == ci[marker + 1]
    assert in_readme[0].endswith("&& pip install -e '.[test]' && python -m pytest")
