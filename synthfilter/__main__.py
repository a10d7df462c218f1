"""``python -m synthfilter``: the same CLI as the ``synthfilter`` console script."""

from synthfilter.cli import main

if __name__ == "__main__":
    main()
