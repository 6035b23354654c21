"""Celery workers and the engines they call. Importing this package imports nothing heavy."""
