"""The end-to-end demo: synthetic data -> tokenizers -> tokenization -> LM -> generated media."""
