"""Built-in modules, registered as entry points in pyproject.toml.

Each class is constructed from its module entry's `config` mapping when a turn runs.
"""
