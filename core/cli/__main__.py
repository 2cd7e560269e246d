"""`python -m core.cli …`: the `diffstack` command, for launchers that take a module (torchrun -m)."""

from core.cli import main

raise SystemExit(main())
