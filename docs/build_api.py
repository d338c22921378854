"""Build the API reference (HTML, from the docstrings) with pdoc: every public module of sparsegt.

    python docs/build_api.py [OUTPUT_DIR]      # default docs/api (not committed); `make docs` runs this

Packages list their public names in ``__all__``, which would hide their submodules from pdoc, so every
module is named explicitly (private ``_x`` modules left out).
"""

from __future__ import annotations

import pkgutil
import sys
import warnings
from pathlib import Path


def public_modules() -> list[str]:
    import sparsegt

    names = ["sparsegt"]
    for module in pkgutil.walk_packages(sparsegt.__path__, "sparsegt."):
        if not any(part.startswith("_") for part in module.name.split(".")) and module.name not in names:
            names.append(module.name)
    return names


def build(output: Path) -> list[str]:
    import pdoc

    modules = public_modules()
    with warnings.catch_warnings():  # annotations pdoc cannot resolve are shown as written: not an error
        warnings.simplefilter("ignore", UserWarning)
        pdoc.pdoc(*modules, output_directory=output)
    return modules


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "api"
    print(f"API reference: {len(build(out))} modules -> {out / 'index.html'}")
