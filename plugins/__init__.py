"""The built-in strategies, installed as ``testbed_plugins``.

Each module is a plugin registered through the ``testbed`` entry-point group in
pyproject.toml, exactly as a third-party plugin would be. Each seam's strategies live
in the module named after it.
"""
