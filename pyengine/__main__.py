"""`python -m pyengine`: run the engine alone (what `fairvisor engine` and the supervisor start)."""

import sys

from .server import main

sys.exit(main())
