"""A tiny SQS stand-in for the benchmarks (``python -m bench.sqs_standin``); see ``__main__``.

A package rather than a module of ``bench/``: ``make bench`` runs every module there as
a benchmark, and this is not one.
"""
