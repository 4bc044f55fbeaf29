"""imbal: an experiment runner for class-imbalance studies in image classification."""

__version__ = "0.1.0"
