"""The public surface of redkit.session."""

from __future__ import annotations

import redkit.session


def test_all_names_exist_and_are_documented() -> None:
    assert sorted(redkit.session.__all__) == [
        "Session",
        "SessionDataTooLarge",
        "SessionMiddleware",
        "SessionStats",
        "SessionStore",
        "load_session",
        "login",
        "logout",
        "session_user_id",
    ]
    for name in redkit.session.__all__:
        obj = getattr(redkit.session, name)
        assert obj.__doc__, name


def test_core_does_not_import_starlette() -> None:
    import subprocess
    import sys

    code = (
        "import sys, redkit.session; "
        "assert 'starlette' not in sys.modules and 'fastapi' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
