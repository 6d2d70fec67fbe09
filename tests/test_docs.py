"""The README is a guide for users: small, with the two set-up commands, a SaRA snippet that runs,
links that resolve, and no wording about how the suite was built; the same goes for
docs/results.md, where the results live."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
RESULTS = REPO / "docs" / "results.md"
# written by other changes to the suite; the README links them already
PENDING: set[str] = set()


def test_readme_is_a_short_guide():
    text = README.read_text(encoding="utf-8")
    assert len(text.encode("utf-8")) <= 25_000, f"README.md is {len(text.encode())} bytes"
    assert "pip install -e . && python run.py" in text
    assert "pip install -e '.[dev]' && python -m pytest" in text
    for doc in ("docs/results.md", "docs/benchmark.md", "docs/ARCHITECTURE.md", "docs/use_outside.md"):
        assert f"]({doc}" in text, doc


@pytest.mark.parametrize("doc", [README, RESULTS], ids=lambda p: p.name)
def test_relative_links_resolve(doc):
    text = doc.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        path = (doc.parent / target).resolve()
        rel = path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else str(path)
        assert path.exists() or rel in PENDING, f"{doc.name}: broken link {target}"


@pytest.mark.parametrize("doc", [README, RESULTS], ids=lambda p: p.name)
def test_no_wording_about_how_the_suite_was_built(doc):
    text = doc.read_text(encoding="utf-8")
    for pattern in (r"\bissue\b", r"Done when", r"\bsession", r"\b20\d\d-\d\d-\d\d\b", r"\d\d:\d\d UTC"):
        assert not re.search(pattern, text, re.IGNORECASE), (doc.name, pattern, re.search(pattern, text, re.I))


def test_readme_sara_snippet_runs(tmp_path, monkeypatch):
    text = README.read_text(encoding="utf-8")
    section = text.split("## Using SaRA in your own code", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    fresh, model = scope["fresh"], scope["model"]
    assert (tmp_path / "delta.safetensors").is_file()
    assert all(a.equal(b) for a, b in zip(model.parameters(), fresh.parameters()))
    assert scope["optimizer"].num_trainable > 0
