"""User code named in a configuration is imported only as far as it is named: a name its module
does not define, or a function where a calculator class is wanted, is refused without running
the module (here the module's top-level code would leave a file behind)."""

from __future__ import annotations

import sys

import pytest

from alflow.errors import ConfigError
from alflow.labelling.ase_calc import calculator_class
from alflow.sampling.cvs import import_hook

MODULE = '''
import pathlib
pathlib.Path(__file__).with_name("ran").write_text("the module ran")

from ase.calculators.lj import LennardJones


class MyLJ(LennardJones):
    pass


def helper():
    return 1


if True:
    def rg(positions):
        return positions[..., 0, 0]
'''


@pytest.fixture()
def user_module(tmp_path, monkeypatch):
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "calcs.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield pkg
    for name in [m for m in sys.modules if m.startswith("userpkg")]:
        del sys.modules[name]


@pytest.mark.parametrize("path, error", [
    ("userpkg.calcs.Missing", "defines no 'Missing'; nothing of it was run"),
    ("userpkg.calcs.helper", "is a function, not a class; nothing of it was run"),
    ("userpkg.nothere.Calc", "no module named 'userpkg.nothere'"),
    ("userpkg.calcs.My-LJ", "is not a dotted Python name"),
])
def test_what_is_not_a_named_calculator_is_refused_without_running_it(user_module, path,
                                                                       error):
    with pytest.raises(ConfigError, match=error):
        calculator_class(path)
    assert not (user_module / "ran").exists()


def test_a_named_calculator_and_cv_are_imported(user_module):
    from ase.calculators.lj import LennardJones

    cls = calculator_class("userpkg.calcs.MyLJ")
    assert issubclass(cls, LennardJones) and (user_module / "ran").exists()
    assert import_hook("userpkg.calcs:rg")(__import__("torch").ones(2, 3, 3)).shape == (2,)
    with pytest.raises(ConfigError, match="not an ASE Calculator class"):
        calculator_class("pathlib.Path")  # a class, but no calculator


def test_cv_names_are_checked_before_import(user_module):
    with pytest.raises(ConfigError, match="function: userpkg.calcs .* defines no 'nope'"):
        import_hook("userpkg.calcs:nope")
    assert not (user_module / "ran").exists()
