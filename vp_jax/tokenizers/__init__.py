"""Public tokenizer APIs (see docs/interfaces.md)."""
