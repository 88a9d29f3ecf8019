"""The examples of docs/operations.md, run by the convention of tests/_docs.py."""

from __future__ import annotations

from _docs import Doc

test_examples_run_twice = Doc(
    "docs/operations.md", expect={"handler trace": ["'events.handle'"]}
).test()
