"""`python -m hoopgw` is the `hoopgw` command (what written kubeconfigs and ssh configs run)."""

import sys

from hoopgw.cli import main

sys.exit(main())
