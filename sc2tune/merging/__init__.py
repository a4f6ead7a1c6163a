"""Internals of the streaming adapter merge; the public entry point is :func:`sc2tune.merge.merge`."""
