"""Models: the Part A scratch CNN (`cnn.py`); Part B backbones come from timm."""
