"""Evaluation: execution-based pass@k in a sandbox, held-out loss, FIM infilling, classification metrics,
and reports (JSON, Markdown, PNG plots). ``sc2tune eval`` is a thin layer over its modules (``api`` the typed
API, ``codeeval``, ``runeval``, ``compare``, ``sandbox``, ``report``: ARCHITECTURE.md); the public face is
``sc2tune`` itself (``evaluate_code``, ``evaluate_run``, ``resolve_run``)."""
