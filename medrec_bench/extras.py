"""Optional dependencies (pyproject extras): import one, or fail with one line naming the extra that installs it."""

from __future__ import annotations

import importlib
from types import ModuleType


def require_extra(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module`` for ``feature``; when it is missing raise an ImportError naming ``pip install`` of ``extra``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{feature} needs {module}, an optional dependency: "
                          f"pip install -e \".[{extra}]\" (or pip install \"medrec-bench[{extra}]\")") from None
