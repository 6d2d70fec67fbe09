"""Every claim of the claims report quotes the paper verbatim: each non-null `quote` of
paper/claim_quotes.yaml occurs in the paper's extracted text (whitespace collapsed), on the line the
entry names."""
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
QUOTES = ROOT / "paper" / "claim_quotes.yaml"
SEED = ROOT / "paper" / "seeds" / "002_edc8cfe49ec16437.txt"


def _ws(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip()


def _entries():
    data = yaml.safe_load(QUOTES.read_text(encoding="utf-8"))
    return sorted(data.items(), key=lambda kv: int(kv[0][1:]))


ENTRIES = _entries()
TEXT = SEED.read_text(encoding="utf-8")
LINES = TEXT.splitlines()


def test_every_claim_has_an_entry():
    assert [k for k, _ in ENTRIES] == [f"C{i}" for i in range(1, len(ENTRIES) + 1)]
    for cid, e in ENTRIES:
        assert {"quote", "source", "line", "note"} <= set(e), cid
        if e["quote"] is None:
            assert e["note"], f"{cid}: a null quote must say why in its note"


@pytest.mark.parametrize("cid,entry", [(k, v) for k, v in ENTRIES if v["quote"] is not None],
                         ids=[k for k, v in ENTRIES if v["quote"] is not None])
def test_quote_is_verbatim(cid, entry):
    q = _ws(entry["quote"])
    assert q, cid
    assert q in _ws(TEXT), f"{cid}: quote not found in {SEED.name}: {q[:80]}..."
    line = int(entry["line"])
    assert 1 <= line <= len(LINES), cid
    assert q in _ws(LINES[line - 1]), f"{cid}: quote not on line {line}"
    assert SEED.name in entry["source"], cid
