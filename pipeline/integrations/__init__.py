"""Integrations with orchestrators (optional extras): :mod:`pipeline.integrations.dagster`."""
