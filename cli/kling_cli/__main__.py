"""Entry point for `python -m kling_cli`."""

from kling_cli.app import main

if __name__ == "__main__":
    raise SystemExit(main())
