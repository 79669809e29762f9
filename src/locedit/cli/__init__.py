"""The ``locedit`` command line, one module per command group.

Deferred imports, on purpose: a command imports the locedit modules it runs (and with them torch and
transformers) inside its function, so that ``locedit --help`` and a command refused by its checks return
in the time it takes to import the package, without loading the numerical stack.
"""
