"""Per-request records, time series and run summaries."""
from .collector import Metrics, percentiles, weighted_percentiles

__all__ = ["Metrics", "percentiles", "weighted_percentiles"]
