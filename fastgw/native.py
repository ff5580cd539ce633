"""The gateway's hot path, compiled: which modules setup.py builds with Cython, and their twins.

The HTTP and handshake path (client connection, exchange, backend connection, head processing,
routing, balancing, the relay session) is ordinary Python, and CPython spends most of a request
interpreting it. setup.py compiles these modules with Cython in "pure Python mode": the same
`.py` file is the source of the extension, and a `.pxd` beside it declares the hot classes as
extension types with typed fields (attribute access becomes a struct field, calls between them C
calls). So each compiled module's pure-Python twin is its own source: nothing to keep in step.

FASTGW_NO_EXTENSIONS=1 makes every module here (and the frame engine, see frames.py) load from
its `.py` source, as on a machine without a compiler; `implementation()` says what is in use.
This file must import only the standard library: setup.py executes it to read COMPILED.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import os
import sys

# fastgw.<name> for each name: the modules a request or a handshake runs through.
COMPILED = (
    "http1", "downstream", "upstream", "proxy", "wsproxy", "handshake", "relay", "local",
    "routing", "balancer", "backends", "affinity", "metrics", "timeouts", "gateway",
)

_HERE = os.path.dirname(os.path.abspath(__file__))


def _source_spec(name: str, module_name: str):
    """An import spec that loads fastgw/<name>.py as `module_name`, whatever is compiled."""
    return importlib.util.spec_from_file_location(module_name, os.path.join(_HERE, name + ".py"))


class _SourceFirst(importlib.abc.MetaPathFinder):
    """Loads the compiled modules from their .py source even where the extension is built."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package != "fastgw" or name not in COMPILED:
            return None
        return _source_spec(name, fullname)


def use_twins() -> None:
    """Import the pure-Python twins from now on (call before the modules are first imported)."""
    if not any(isinstance(f, _SourceFirst) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceFirst())


def is_compiled(module) -> bool:
    return not (getattr(module, "__file__", "") or "").endswith(".py")


def implementation() -> str:
    """ "c" when every module of COMPILED is its extension, "py" when none is, else "mixed"."""
    kinds = {is_compiled(importlib.import_module(f"fastgw.{name}")) for name in COMPILED}
    return "mixed" if len(kinds) > 1 else ("c" if kinds == {True} else "py")


def load_twin(name: str):
    """A fresh copy of fastgw.<name> from its .py source, beside the compiled one (for tests
    that compare the two in one process). It is not registered in sys.modules."""
    spec = _source_spec(name, f"fastgw._twin_{name}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
