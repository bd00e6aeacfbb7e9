"""Declarative builds: configs, the task graph, up-to-date state, doit tasks, watch mode.

The only layer that imports doit (and watchdog, in `watch`); everything it builds with lives below.
"""
