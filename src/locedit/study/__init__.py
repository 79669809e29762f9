"""Edit-and-evaluate sessions: one fact's edit under one problem, scored before and after, weights restored.

This layer joins :mod:`locedit.edit` (methods and problems) and :mod:`locedit.evaluate` (metrics), above both.
"""
