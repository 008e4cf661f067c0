"""`python -m service` runs the headstart command line."""

import sys

from service.cli import main

sys.exit(main())
