"""Run the benchmarks: ``python -m bench [name ...] [--rounds N] [--iterations N]``.

``name`` picks ``bench/bench_<name>.py`` modules (default: all of them).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import pkgutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import Case, Env, report, run_cases
from redkit.server import EmbeddedRedis


def _modules(names: list[str]) -> list[str]:
    here = Path(__file__).resolve().parent
    found = sorted(
        m.name[len("bench_") :]
        for m in pkgutil.iter_modules([str(here)])
        if m.name.startswith("bench_")
    )
    unknown = set(names) - set(found)
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(sorted(unknown))}; have {found}")
    return names or found


async def main(names: list[str], rounds: int, iterations: int) -> None:
    with EmbeddedRedis() as server:
        env = Env(url=server.url, host=server.host, port=server.port)
        cases: list[Case] = []
        for name in _modules(names):
            module = importlib.import_module(f"bench.bench_{name}")
            cases += await module.cases(env)
        admin = env.raw_client(counted=False)
        try:
            results = await run_cases(cases, admin, rounds=rounds, iterations=iterations)
            # read while the clients are open: they describe what they ran
            footers = [line for footer in env.footers for line in footer()]
        finally:
            for close in reversed(env.closers):
                await close()
        version = server.binary
        print(f"server: {version} port {server.port}; rounds={rounds} iterations={iterations}")
        print(report(results))
        for line in footers:
            print(line)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("names", nargs="*")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(main(args.names, args.rounds, args.iterations))
