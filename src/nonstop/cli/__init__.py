"""The ``nonstop`` command line."""
