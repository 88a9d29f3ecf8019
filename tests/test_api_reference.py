"""docs/api.md against the code: every name of every public ``__all__`` is
on the page, with each module that exports it, and the page lists nothing
else; each name is one object wherever it is exported; each page it points
to exists, has the section named and mentions the name."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path
from types import ModuleType

import pytest

import redkit

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "api.md"
ROW = re.compile(
    r"^\| `(?P<name>[^`]+)` \| (?P<modules>[^|]+) \| (?P<what>[^|]+) \| (?P<where>[^|]+) \|$"
)
LINK = re.compile(r"\[[^\]]+\]\((?P<path>[^)#]+)(?:#(?P<anchor>[^)]+))?\)")
# The reference service behind `redkit demo` is an app, not an API.
NOT_AN_API = {"redkit.demo"}


def public_modules() -> dict[str, ModuleType]:
    """redkit and each public module or package right beneath it; deeper
    modules are their package's business (it exports what is public)."""
    names = ["redkit"] + [
        f"redkit.{m.name}"
        for m in pkgutil.iter_modules(redkit.__path__)
        if not m.name.startswith("_") and f"redkit.{m.name}" not in NOT_AN_API
    ]
    return {name: importlib.import_module(name) for name in names}


def rows() -> dict[str, tuple[list[str], str, str]]:
    found: dict[str, tuple[list[str], str, str]] = {}
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        if (row := ROW.match(line)) is None:
            continue
        name = row["name"]
        assert name not in found, f"{name} is listed twice"
        modules = re.findall(r"`([^`]+)`", row["modules"])
        found[name] = (modules, row["what"].strip(), row["where"].strip())
    return found


MODULES = public_modules()
ROWS = rows()


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown page."""
    headings = re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_public_module_has_all() -> None:
    missing = [name for name, module in MODULES.items() if not hasattr(module, "__all__")]
    assert not missing, f"{missing} define no __all__"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_the_page_lists_exactly_the_modules_all(module: str) -> None:
    exported = set(MODULES[module].__all__)
    listed = {name for name, (modules, _, _) in ROWS.items() if module in modules}
    assert exported - listed == set(), f"in {module}.__all__, not on docs/api.md"
    assert listed - exported == set(), f"on docs/api.md for {module}, not in its __all__"


def test_the_page_names_only_public_modules() -> None:
    named = {m for modules, _, _ in ROWS.values() for m in modules}
    assert named <= set(MODULES), named - set(MODULES)


@pytest.mark.parametrize("name", sorted(ROWS))
def test_a_name_is_one_object_with_a_line_and_a_place(name: str) -> None:
    modules, what, where = ROWS[name]
    objects = {id(getattr(MODULES[m], name)) for m in modules if hasattr(MODULES[m], name)}
    assert len(objects) == 1, f"{name} is not one object in {modules}"
    assert what and what[-1] == ".", f"{name}: a one-line description, ending with a period"
    if where == "this page":
        return
    if where == "docstring":
        assert inspect.getdoc(getattr(MODULES[modules[0]], name)), f"{name} has no docstring"
        return
    link = LINK.fullmatch(where)
    assert link is not None, f"{name}: 'docstring', 'this page' or a link, not {where!r}"
    page = (PAGE.parent / link["path"]).resolve()
    assert page.is_file(), f"{name}: {link['path']} does not exist"
    assert re.search(rf"\b{re.escape(name)}\b", page.read_text(encoding="utf-8")), (
        f"{name} is not mentioned in {link['path']}"
    )
    if link["anchor"]:
        assert link["anchor"] in anchors(page), f"{name}: no section #{link['anchor']}"
