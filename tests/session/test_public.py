"""The public surface of redkit.session."""

from __future__ import annotations

import inspect

import redkit
import redkit.session


def test_all_lists_exactly_the_public_names_each_documented_and_in_redkit() -> None:
    # The names themselves are pinned once, in tests/test_public_api.py.
    public = {
        name
        for name, value in vars(redkit.session).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert set(redkit.session.__all__) == public
    for name in redkit.session.__all__:
        obj = getattr(redkit.session, name)
        assert obj.__doc__, name
        assert getattr(redkit, name) is obj, name


def test_core_does_not_import_starlette() -> None:
    import subprocess
    import sys

    code = (
        "import sys, redkit.session; "
        "assert 'starlette' not in sys.modules and 'fastapi' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
