import sys

from . import INTERRUPTED_AT_START

try:
    from .cli import main
except KeyboardInterrupt:       # Ctrl-C while the commands' modules load: nothing has been done yet
    print(INTERRUPTED_AT_START, file=sys.stderr)
    sys.exit(130)

sys.exit(main())
