"""Benchmarks: ``python -m bench.run --quick|--full [--only KEY]`` writes bench/results/latest.{json,md}.

Every headline figure is a ratio measured in the same run against a baseline on the same data, because the
machines are shared and noisy; absolute rates are reported for context only.
"""
