"""Generation: KV-cache sampling with classifier-free guidance over the task layouts."""
