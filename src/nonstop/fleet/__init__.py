"""Fleets: several hosts deployed as one (PRODUCT.md section 7).

Built so far: SSH to the hosts (``ssh``), the ``[fleet]`` configuration (``config``), the
batch sequence (``batches``), staging of release artifacts (``staging``) and the fleet
lock's lease (``lease``).  The fleet deploy itself builds on these.
"""
