"""Honest evaluation: bootstrap intervals, the exact McNemar test and calibration baselines."""

from .bootstrap import Interval, bootstrap_mean_interval
from .calibration import (
    expected_calibration_error,
    fit_label_bias,
    fit_temperature,
    label_bias_corrected,
    negative_log_likelihood,
    temperature_scaled,
)
from .mcnemar import McNemarResult, mcnemar_exact
from .report import compare_on_test, format_table, paired_comparison

__all__ = [
    "Interval",
    "McNemarResult",
    "bootstrap_mean_interval",
    "compare_on_test",
    "expected_calibration_error",
    "fit_label_bias",
    "fit_temperature",
    "format_table",
    "label_bias_corrected",
    "mcnemar_exact",
    "negative_log_likelihood",
    "paired_comparison",
    "temperature_scaled",
]
