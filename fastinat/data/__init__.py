"""The data layer: images, dataset checks, the split, loaders, demo data and download.

Submodules are imported on use; `fastinat.data.loaders` pulls in fastai.
"""
