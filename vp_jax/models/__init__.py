"""Model kinds trained by the shared trainer."""
