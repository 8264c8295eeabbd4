"""Meta-tests: every hook in ``host.contract.hookspecs`` is documented and tested (datasette's pattern).

A hook counts as documented when its docstring has a summary, a ``:param <name>:`` line for
each argument and a ``:return:`` line; it counts as tested when its name appears in a test
file under ``tests/`` other than this one.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy
import pytest

from host.contract import hookspecs
from host.plugins import PROJECT

TESTS = Path(__file__).parent
SPEC_ATTR = f"{PROJECT}_spec"  # what pluggy.HookspecMarker(PROJECT) sets on a hookspec


def hookspecs_of(module: ModuleType) -> dict[str, Callable[..., Any]]:
    """The functions of ``module`` marked as plughost hookspecs."""
    return {name: fn for name, fn in vars(module).items() if callable(fn) and hasattr(fn, SPEC_ATTR)}


def doc_problems(fn: Callable[..., Any]) -> list[str]:
    """What is missing from a hookspec's docstring (empty when it is fully documented)."""
    doc = inspect.getdoc(fn)
    if not doc or not doc.strip():
        return ["no docstring"]
    problems = []
    if doc.lstrip().startswith(":"):
        problems.append("no summary line")
    for arg in inspect.signature(fn).parameters:
        if f":param {arg}:" not in doc:
            problems.append(f"no ':param {arg}:'")
    if ":return:" not in doc:
        problems.append("no ':return:'")
    return problems


def untested(hooks: Iterable[str], test_files: Iterable[Path]) -> list[str]:
    """The hook names that appear in none of ``test_files``."""
    text = "\n".join(f.read_text(encoding="utf-8") for f in test_files)
    return sorted(h for h in hooks if h not in text)


def files_under_tests() -> list[Path]:
    """Every test module and conftest under tests/, except this file."""
    return sorted(
        p
        for p in TESTS.rglob("*.py")
        if p.resolve() != Path(__file__).resolve() and p.name.startswith(("test_", "conftest"))
    )


HOOKS = hookspecs_of(hookspecs)


def test_hookspecs_are_found() -> None:
    assert HOOKS, "no hookspec found in host.contract.hookspecs: the meta-tests below would pass vacuously"
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    assert set(HOOKS) == {name for name in dir(pm.hook) if not name.startswith("_")}


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_hook_is_documented(name: str) -> None:
    assert doc_problems(HOOKS[name]) == [], f"hookspec {name!r} in host/contract/hookspecs.py is not fully documented"


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_hook_has_a_test(name: str) -> None:
    assert untested([name], files_under_tests()) == [], f"hookspec {name!r} is not used by any test under tests/"


# -- the checkers themselves must be able to fail --------------------------------------------------------


def test_checkers_catch_an_undocumented_and_untested_hook(tmp_path: Path) -> None:
    bad = ModuleType("bad_hookspecs")
    marker = pluggy.HookspecMarker(PROJECT)

    @marker
    def register_nothing(config, registry):  # type: ignore[no-untyped-def]
        """Do something.

        :param config: the configuration.
        """

    @marker
    def register_silence(config):  # type: ignore[no-untyped-def]
        pass

    bad.register_nothing = register_nothing  # type: ignore[attr-defined]
    bad.register_silence = register_silence  # type: ignore[attr-defined]
    bad.helper = lambda: None  # type: ignore[attr-defined]  # not a hookspec: ignored
    found = hookspecs_of(bad)
    assert set(found) == {"register_nothing", "register_silence"}
    assert doc_problems(found["register_nothing"]) == ["no ':param registry:'", "no ':return:'"]
    assert doc_problems(found["register_silence"]) == ["no docstring"]

    a_test = tmp_path / "test_something.py"
    a_test.write_text("def test_it():\n    call('register_nothing')\n")
    assert untested(found, [a_test]) == ["register_silence"]
