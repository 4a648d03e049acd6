"""Pieces of the top-level bootstrap program (``__main__.py`` at the repo root):
pure descriptions of what a cluster needs, and the resources that edit
objects the cluster already has (CoreDNS)."""
