"""``python -m zramctl``: the same command as the ``zramctl`` script."""

from .cli.main import entry

if __name__ == "__main__":
    entry()
