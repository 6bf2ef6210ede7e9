"""Sweeps: the MLflow parent run of a `--multirun` sweep (`sweeps.mlflow_parent`)."""
