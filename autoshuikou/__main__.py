import sys

from autoshuikou.cli import main

sys.exit(main())
