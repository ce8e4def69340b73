"""Fleets: several hosts deployed as one, through the front (docs/fleet.md).

SSH to the hosts (``ssh``), the ``[fleet]`` configuration (``config``), the batch sequence
(``batches``), staging of release artifacts (``staging``), the fleet lock's lease
(``lease``), and on them the fleet deploy and rollback (``deploy``) and ``fleet status``
(``status``).
"""
