import sys

from vocabxfer.cli.main import main

sys.exit(main())
