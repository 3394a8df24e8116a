"""``python -m fastrnn``: the same as the ``fastrnn`` command."""
import sys

from ._entry import main

sys.exit(main())
