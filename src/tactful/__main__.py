"""``python -m tactful``."""

from tactful.cli import main

main()
