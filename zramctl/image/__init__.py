"""The device image: its on-disk format, block I/O and commit log, the lazily read maps,
commits, and check.

It knows bytes and durability, not the device directory: the store opens it.
"""
