"""Pure readers and writers of ANE program formats: wire, descriptors, ``.anec``, tensor layout.

No devices and no container rules here.
"""
