"""The ``reram-cosim`` command line: the top layer of the code base.

``device`` -> ``crossbar`` -> ``mapping`` -> ``nn`` -> ``cli``: every package imports only the
packages to its left, and nothing imports ``cli`` (``tests/test_layers.py`` checks every import
statement, including the ones inside functions). Each command group has its own module here
(``device``, ``tables``, ``circuit``, ``crossbar``, ``finetune``, ``evaluate``), assembled by
:mod:`cli.main`; ``make demo`` is :mod:`cli.demo`. Run it as ``reram-cosim ...`` or
``python -m cli ...``.
"""
