"""Public tokenizer APIs (video: MAGVIT-v2; audio: SoundStream). See docs/interfaces.md."""
