"""poise: automated discovery of RL algorithms for language models."""
__version__ = "0.1.0"
