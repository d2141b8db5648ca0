"""``python -m gpupin`` is the ``gpupin`` command."""

from gpupin.cli import main

raise SystemExit(main())
