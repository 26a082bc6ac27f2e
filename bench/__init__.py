"""Benchmarks for HR Exchange: ``make bench`` or ``python -m bench [--quick] [NAME ...]``.

Every benchmark measures our code side by side with a baseline in the same run on the same data, prints the
ratio and the absolute figures, and returns a record that ``bench/__main__.py`` writes to
``bench/results/<date>.json`` and ``.md``. Nothing here is a test: there are no timed assertions anywhere.
"""
