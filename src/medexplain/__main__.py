import sys

from medexplain.cli import main

sys.exit(main())
