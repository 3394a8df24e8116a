"""``python -m benchmarks.report``: see :mod:`benchmarks.report.cli`."""
import sys

from .cli import main

sys.exit(main())
