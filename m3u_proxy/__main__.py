"""``python -m m3u_proxy``."""

import sys

from m3u_proxy.cli import main

sys.exit(main())
