"""``python -m fastrnn``: the same as the ``fastrnn`` command."""
import sys

from .cli import main

sys.exit(main())
