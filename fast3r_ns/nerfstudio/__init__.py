"""nerfstudio integration: ``ns-process-data fast3r``. The only package that imports nerfstudio.

``hook.py`` is loaded by a .pth file in every Python process (by path, so neither this package nor
``fast3r_ns`` is imported at start-up); it costs only the standard library.
"""
