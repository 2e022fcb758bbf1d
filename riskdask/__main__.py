import sys

from riskdask.cli import main

sys.exit(main())
