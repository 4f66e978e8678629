"""Evaluation: metrics from predictions (scikit-learn), figures (matplotlib) and the report
files of a run (report.html, report.md, report.json)."""
