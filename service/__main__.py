"""`python -m service`: the same as `jobmanager`."""

import sys

from service.cli import main

sys.exit(main())
