"""``python -m eventbus``: the same as the ``eventbus`` command."""

from .cli import main

main()
