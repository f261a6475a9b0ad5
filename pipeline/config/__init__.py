"""Report configs: pydantic models (``models``), YAML loading with line numbers and the JSON
Schema (``loading``), and the messages a bad config gets (``problems``)."""

from __future__ import annotations

from .loading import json_schema, load_config
from .models import (
    EPSILON_CEILING,
    BudgetConfig,
    CsvOptions,
    DimensionConfig,
    DominanceConfig,
    EngineConfig,
    MetricConfig,
    OutputConfig,
    PrivacyConfig,
    RangeFilter,
    ReportConfig,
    SourceConfig,
    config_from_dict,
    file_url_path,
    source_url,
    url_problem,
)
from .problems import did_you_mean

__all__ = [
    "EPSILON_CEILING", "BudgetConfig", "CsvOptions", "DimensionConfig", "DominanceConfig", "EngineConfig",
    "MetricConfig", "OutputConfig", "PrivacyConfig", "RangeFilter", "ReportConfig", "SourceConfig",
    "config_from_dict", "did_you_mean", "file_url_path", "json_schema", "load_config", "source_url", "url_problem",
]
