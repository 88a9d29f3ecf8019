"""The examples in README.md and docs/cache.md are run, in order, one
namespace per file, with ``REDIS_URL`` pointing at the test server (the
other components' docs/*.md have their own tests beside the component's). A block whose first
line is ``# not run: <reason>`` is shown to readers only (an app fragment that
needs a framework around it)."""

from __future__ import annotations

import ast
import re
import sys
import types
from pathlib import Path

import pytest

from redkit.server import EmbeddedRedis
from redkit.testing import flush

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "docs" / "cache.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks(path: Path) -> list[str]:
    return [b for b in BLOCK.findall(path.read_text()) if not b.startswith("# not run")]


@pytest.mark.parametrize("path", DOCS, ids=[p.name for p in DOCS])
async def test_examples_run(
    path: Path, redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = _blocks(path)
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    module = types.ModuleType(f"redkit_doc_{path.stem}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace = module.__dict__
    import redkit

    client = await redkit.connect(url=redis_server.url, min_idle_conns=0)
    await flush(client)
    await client.aclose()
    for number, source in enumerate(blocks, 1):
        code = compile(
            source, f"{path.name}#block{number}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        )
        result = eval(code, namespace)
        if isinstance(result, types.CoroutineType):
            await result
    closer = namespace.get("client")
    if closer is not None and hasattr(closer, "aclose"):
        await closer.aclose()
