"""`python -m companion_cli ...` is the `companion` command."""

import sys

from companion_cli.main import main

sys.exit(main())
