import sys

from gridsight.cli import main

sys.exit(main())
