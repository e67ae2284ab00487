"""``python -m cli ...`` is ``reram-cosim ...``."""

import sys

from cli.main import main

sys.exit(main())
