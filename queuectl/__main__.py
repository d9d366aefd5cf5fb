"""`python -m queuectl ...`: the same command line as `queuectl`."""

from .cli import main

if __name__ == "__main__":
    main()
