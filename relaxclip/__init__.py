"""relaxclip: contrastive fine-tuning of image-text encoders for zero-shot chest X-ray classification."""

__version__ = "0.1.0"
