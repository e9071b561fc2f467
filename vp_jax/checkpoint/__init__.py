"""Orbax checkpointing of the train state and the data iterator position."""
