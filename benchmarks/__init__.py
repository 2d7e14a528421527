"""Benchmarks of convpricer against converged references and against QuantLib and
FinancePy on the same inputs (issue #7). Run ``python -m benchmarks.run [--quick]``;
see benchmarks/README.md. Nothing here is imported by convpricer or timed in tests."""
