"""SAM 3: our implementation of Meta's Segment Anything Model 3 (image detection, clicks, video tracking)."""

from sam3.config import Sam3Config, get_config

__all__ = ["Sam3Config", "get_config"]
