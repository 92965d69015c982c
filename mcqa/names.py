"""One registry type for everything chosen by name: tasks, training modes, readouts, baselines
and model aliases. `register` refuses a second entry of a name (a bug, raised at import),
`resolve` turns a name a user typed into its entry or an error with "did you mean", and the
CLI builds its choices and help from the registry instead of repeating the names by hand.

A Registry is a dict (name -> entry), so it reads and iterates as one and tests can
monkeypatch an entry; registering goes through `register`."""

from __future__ import annotations

import importlib
import sys
from typing import TypeVar

from mcqa.errors import McqaError, did_you_mean

T = TypeVar("T")


class Registry(dict[str, T]):
    def __init__(self, kind: str, error: type[McqaError] = McqaError):
        super().__init__()
        self.kind = kind  # "readout", "training mode", ...: what the messages call an entry
        self.error = error

    def register(self, name: str, item: T) -> T:
        if name in self:
            raise ValueError(f"{self.kind} '{name}' registered twice")
        self[name] = item
        return item

    def resolve(self, name: str) -> T:
        if name in self:
            return self[name]
        raise self.error(f"unknown {self.kind} '{name}'{did_you_mean(name, self)} (known: {', '.join(self)})")

    def help(self) -> str:
        """'a, b or c', for --help texts."""
        names = list(self)
        return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def lazy_exports(package: str, where: dict[str, tuple[str, ...]]):
    """A package's re-exported names, each module imported on first use (PEP 562): `where` maps
    a module to the names it gives. Returns (__getattr__, __dir__, __all__) for the package."""
    module_of = {name: module for module, names in where.items() for name in names}

    def __getattr__(name: str):
        if name not in module_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(module_of[name])
        # Bind all of that module's names at once: a submodule's import binds its own name in
        # the package (mcqa.model.verify, the module), which the function of that name replaces.
        namespace = vars(sys.modules[package])
        namespace.update({n: getattr(module, n) for n in where[module_of[name]]})
        return namespace[name]

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *module_of})

    return __getattr__, __dir__, sorted(module_of)
