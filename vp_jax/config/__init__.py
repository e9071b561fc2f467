"""Configuration: gin at the entry points only (t5x style); libraries take frozen dataclasses."""
