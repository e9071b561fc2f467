"""Data: datasets, iterators with checkpointable positions, and host-to-device batching."""
