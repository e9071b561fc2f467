"""Reading and writing media files (audio here; video in `video.py`)."""
