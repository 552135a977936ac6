"""Benchmarks. Each figure is measured against a baseline in the same run; see REPORT.md."""
