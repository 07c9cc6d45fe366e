import sys

from data_engineering.cli import main

sys.exit(main())
