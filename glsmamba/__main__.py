import sys

from glsmamba.cli import main

sys.exit(main())
