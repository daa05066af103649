"""Built-in modules, registered as entry points in pyproject.toml.

Each class is constructed from its module entry's `config` mapping when a turn runs. Each
declares the config keys it reads as `CONFIG_KEYS` (Amplifier's names where Amplifier's module
of the same name has one); preparation reports any other key as a located WARNING.
"""
