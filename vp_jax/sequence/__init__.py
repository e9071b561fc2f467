"""The unified token vocabulary and the per-task sequence layouts of the VideoPoet LM."""
