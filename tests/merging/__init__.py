"""Tests of ``sc2tune.merging``, one file per module (a package: ``test_plan``/``test_api``/``test_stream`` also
name files elsewhere in ``tests/``)."""
