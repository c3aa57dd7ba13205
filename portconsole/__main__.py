"""`python -m portconsole`: the same as the `portconsole` command."""

import sys

from portconsole.cli_prelaunch import main

sys.exit(main())
