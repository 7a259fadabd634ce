"""`python -m heartjax.report RUN_DIR [RUN_DIR ...] --out DIR` (flags: heartjax.report.cli)."""

from heartjax.report.cli import main

if __name__ == "__main__":
    main()
