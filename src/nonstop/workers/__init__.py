"""Worker processes: the data plane on every core (``worker_processes`` / ``workers``).

``engine.WorkersEngine`` (the control process's side, behind the ``Engine`` interface),
``worker`` (one worker process, ``python -m nonstop.workers``) and ``channel`` (the
framed messages between them).  docs/architecture.md, "Workers", explains the design.
"""
