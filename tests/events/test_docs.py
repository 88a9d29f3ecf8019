"""The examples of docs/events.md, run by the convention of tests/_docs.py."""

from __future__ import annotations

from _docs import Doc

# The subscriber example really delivers both events to their handlers.
DELIVERED = ["user.created {'id': '42'}", "deleted 42 gdpr"]

test_examples_run_twice = Doc("docs/events.md", expect={'print("deleted"': DELIVERED}).test()
