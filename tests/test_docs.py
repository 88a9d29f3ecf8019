"""The examples of README.md and docs/cache.md, run by the convention of
tests/_docs.py, and the checks that hold for every document.

Besides the convention, each README block also runs twice on its own,
after the prelude only: the README promises that a block needs nothing
from the blocks before it. Its complete app (the block starting with
``# main.py``) runs under uvicorn in tests/wiring/test_readme_app.py.
"""

from __future__ import annotations

import re

import pytest

from _docs import ROOT, Block, Doc, blocks_of, documents, run_steps
from redkit.server import EmbeddedRedis

README = Doc("README.md")
README.take("# main.py\n")

test_readme_examples_run_twice = README.test()
test_cache_examples_run_twice = Doc("docs/cache.md").test()
test_autopipelining_examples_run_twice = Doc("docs/autopipelining.md").test()


@pytest.mark.parametrize("block", README.steps, ids=[b.name for b in README.steps])
async def test_readme_block_runs_twice_on_its_own(
    block: Block, redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    await run_steps([block], redis_server.url, monkeypatch)


@pytest.mark.parametrize("doc", documents())
def test_every_block_compiles(doc: str) -> None:
    for block in blocks_of(doc):
        block.compile()


def test_every_document_with_examples_has_its_test() -> None:
    tests = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests").rglob("test_*.py"))
    missing = [
        doc
        for doc in documents()
        if any(b.runs for b in blocks_of(doc)) and not re.search(rf'Doc\(\s*"{doc}"', tests)
    ]
    assert not missing, f"no test runs the examples of {missing} (see tests/_docs.py)"
