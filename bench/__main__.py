"""`python -m bench`: the whole benchmark (see bench/run.py for the options)."""

from bench.run import main

if __name__ == "__main__":
    raise SystemExit(main())
