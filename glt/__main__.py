"""``python -m glt ...`` runs the ``glt`` command line (e.g. under ``torchrun -m glt lens train``)."""

from glt.cli._main import main

if __name__ == "__main__":
    raise SystemExit(main())
