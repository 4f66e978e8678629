"""Evaluation: metrics from predictions (scikit-learn) and the report files of a run."""
