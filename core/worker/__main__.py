import sys

from core.worker.main import main

sys.exit(main())
