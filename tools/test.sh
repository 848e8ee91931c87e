#!/usr/bin/env bash
# The whole test suite: nbdev contract checks, dataset caches, notebooks, then tests/.
# Run it from the project folder with the dev install active (see the README's Quick start).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} MPLBACKEND=Agg PYTHONWARNINGS=${PYTHONWARNINGS:-ignore::DeprecationWarning}
t0=$SECONDS
say() { printf '\n== %s (%ds)\n' "$1" $((SECONDS - t0)); }

snapshot() { find nbs gnnbatch_nb -type f \( -name '*.ipynb' -o -name '*.py' \) -not -path '*/.ipynb_checkpoints/*' -not -path '*/__pycache__/*' -print0 | sort -z | xargs -0 md5sum; }

say "nbdev_clean: notebooks must already be clean"
before=$(snapshot); nbdev_clean; after=$(snapshot)
if [ "$before" != "$after" ]; then
  echo "Notebooks were not clean: nbdev_clean changed:"; diff <(echo "$before") <(echo "$after") | grep '^>' || true
  echo "Run nbdev_clean (or nbdev_install_hooks) and commit the cleaned notebooks."; exit 1
fi

say "nbdev_export: the library must be in sync with the notebooks"
before=$(snapshot); nbdev_export; after=$(snapshot)
if [ "$before" != "$after" ]; then
  echo "Notebooks and library are not in sync: nbdev_export changed:"; diff <(echo "$before") <(echo "$after") | grep '^>' || true
  echo "Run nbdev_export and commit the library."; exit 1
fi

say "README.md must be generated from nbs/index.ipynb"
python tools/build_readme.py --check

say "documentation site (tools/build_docs.py) and the chromium its browser test drives"
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO=sudo
  else echo "/usr/bin/chromium is missing and neither root nor sudo is available: apt-get install -y chromium"; exit 1; fi
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
python tools/build_docs.py

say "dataset caches (built once, then loaded)"
gnnbatch sizes --dataset qm9
gnnbatch sizes --dataset mp36k

say "notebooks (nbdev_test; cells flagged slow are skipped)"
nbdev_test --n_workers 2 --timing

say "tests/ (pytest)"
python -m pytest -q tests

say "all tests passed"
