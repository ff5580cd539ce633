"""`python -m fastgw` is the `fastgw` command."""

import sys

from fastgw.cli import main

sys.exit(main())
