"""Dagster resources: chosen per deployment in definitions.py."""
from resources.data_store import DataStore
from resources.settings import DatasetSettings, QualityThresholds, SamplingPlan

__all__ = ["DataStore", "DatasetSettings", "QualityThresholds", "SamplingPlan"]
