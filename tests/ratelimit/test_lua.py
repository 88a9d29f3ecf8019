"""The rate-limit scripts are made of shared parts: Script.from_package
joins several package files into one script (one SHA, one call)."""

from __future__ import annotations

import hashlib
from importlib import resources

import pytest

from redkit import ConfigError, Script
from redkit.ratelimit import ALGORITHMS

FILES = resources.files("redkit.ratelimit").joinpath("lua")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_script_is_its_files_joined_in_order(algorithm: str) -> None:
    parts = ["head.lua", f"{algorithm}.lua", "tail.lua"]
    script = Script.from_package("redkit.ratelimit", *(f"lua/{p}" for p in parts))
    source = "\n".join(FILES.joinpath(p).read_text(encoding="utf-8") for p in parts)
    assert script.source == source
    assert script.sha == hashlib.sha1(source.encode()).hexdigest()
    assert algorithm in script.name


def test_one_file_is_the_file_itself() -> None:
    script = Script.from_package("redkit.ratelimit", "lua/gcra.lua")
    assert script.source == FILES.joinpath("gcra.lua").read_text(encoding="utf-8")
    assert script.name == "redkit.ratelimit:lua/gcra.lua"


def test_no_file_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="at least one file"):
        Script.from_package("redkit.ratelimit")
