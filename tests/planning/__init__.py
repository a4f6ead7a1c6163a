"""Tests of ``sc2tune.planning``, one file per module (a package: ``test_plan`` also names a file in
``tests/merging``)."""
