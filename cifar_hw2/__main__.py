import sys

try:
    from .cli import main
except KeyboardInterrupt:       # Ctrl-C while the commands' modules load: nothing has been done yet
    print("cifar-hw2: interrupted while starting; nothing was done", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
