import sys

from qsave.cli import main

sys.exit(main())
