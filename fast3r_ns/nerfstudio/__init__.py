"""nerfstudio integration: ``ns-process-data fast3r``. The only package that imports nerfstudio.

This ``__init__`` stays import-free: the start-up hook (``hook.py``) is imported by a .pth file in every Python
process, and must cost nothing more than the standard library.
"""
