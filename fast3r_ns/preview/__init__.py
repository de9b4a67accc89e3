"""See a reconstruction before training: an HTML quality report (``report``) and a viser 3-D viewer (``viewer``).

Import the submodules directly: ``report`` needs matplotlib, ``viewer`` needs viser, and neither needs torch.
"""
