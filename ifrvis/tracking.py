"""The former name of `ifrvis.runstore` (the MLflow run store), kept while `ifrvis/engine/evaluate.py`
still imports it; everything else imports `ifrvis.runstore`."""

from ifrvis.runstore import RunLogger

__all__ = ["RunLogger"]
