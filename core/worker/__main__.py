import sys

from core.worker.runner import main

sys.exit(main())
