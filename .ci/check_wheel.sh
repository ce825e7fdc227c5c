#!/usr/bin/env bash
# The project as a user installs it: build the wheel, install it without dependencies into a
# temporary folder (no torch download: the checks reuse the .venv's packages), then, from
# outside the checkout so that the source tree cannot stand in for the wheel, check that it
# holds the package ood_lib only (not the book's runner), import every module the wheel holds
# and run `ood-score --help`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="$PWD/${VENV:-.venv}/bin/python"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# build from a copy of what the wheel is made of, so that no build/ folder lands in the checkout;
# book_runner/ comes along only to check that package discovery leaves it out of the wheel
mkdir "$tmp/src"
cp -r pyproject.toml README.md ood_lib book_runner "$tmp/src/"
"$PY" -m pip wheel --no-deps --no-build-isolation -q -w "$tmp/wheel" "$tmp/src"
"$PY" -m pip install --no-deps -q --target "$tmp/site" "$tmp"/wheel/ood_lib-*.whl
cd "$tmp"
PYTHONPATH="$tmp/site" "$PY" - "$tmp/site" <<'PYCODE'
import importlib
import pathlib
import sys

site = pathlib.Path(sys.argv[1])
shipped = sorted(p.name for p in site.iterdir() if p.name != "bin" and p.suffix != ".dist-info")
if shipped != ["ood_lib"]:
    sys.exit(f"[wheel] the wheel must hold the package ood_lib only, not {shipped}")
modules = sorted(".".join(p.relative_to(site).with_suffix("").parts).removesuffix(".__init__")
                 for p in (site / "ood_lib").rglob("*.py"))
for name in modules:
    module = importlib.import_module(name)
    if not pathlib.Path(module.__file__).is_relative_to(site):
        sys.exit(f"[wheel] {name} was imported from {module.__file__}, not from the wheel")
missing = [d for d in ("models", "analysis") if not (site / "ood_lib" / d / "__init__.py").exists()]
if missing:
    sys.exit(f"[wheel] the wheel lacks ood_lib subpackages: {missing}")
print(f"[wheel] {len(modules)} modules import from the installed wheel")
PYCODE
PYTHONPATH="$tmp/site" "$PY" "$tmp/site/bin/ood-score" --help > /dev/null
echo "[wheel] ood-score --help runs from the installed wheel"
