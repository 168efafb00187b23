"""``python -m zramctl``: the same command as the ``zramctl`` script."""

from .cli import entry

if __name__ == "__main__":
    entry()
