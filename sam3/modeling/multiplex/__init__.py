"""SAM 3.1's multiplexed tracker: objects tracked in fixed-size buckets that share one pass."""
