"""Dagster definitions: every stage of the stack as assets, checks, schedules and sensors."""
