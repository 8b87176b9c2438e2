"""hive-init: a small, event-driven init and supervisor for all-in-one containers."""

__version__ = "0.1.0"
