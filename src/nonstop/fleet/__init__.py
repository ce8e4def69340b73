"""Fleets: several hosts deployed as one (PRODUCT.md section 7).

Built so far: SSH to the hosts (``ssh``), the ``[fleet]`` configuration (``config``), the
batch sequence (``batches``) and staging of release artifacts (``staging``).  The fleet
deploy itself builds on these.
"""
