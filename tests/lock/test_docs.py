"""The examples of docs/lock.md, run by the convention of tests/_docs.py."""

from __future__ import annotations

from _docs import Doc

test_examples_run_twice = Doc("docs/lock.md").test()
