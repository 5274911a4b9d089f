"""Datasets: loaders for MNIST, Fashion-MNIST, CIFAR-10/100, SVHN and image folders,
preprocessing fitted on the training split, and a seeded batch iterator.

    from minifit import data
    train, val = data.train_val_split(data.load("cifar10", "train"))   # 40k / 10k, uint8
    pipe = data.Pipeline(data.GCN(scale=55.0), data.ZCA()).fit(train.images)
    batches = data.BatchIterator(train, 128, shuffle=True, seed=0, transform=pipe,
                                 augment=[data.RandomTranslate(4), data.RandomFlip()])
    for x, y in batches: ...   # x float32 (128, 3, 32, 32), y int64 (128,)
"""
from .batches import BatchIterator
from .errors import DataFileError, MissingDataError
from .loaders import SPLITS, VALIDATION_SIZE, Dataset, load, train_val_split
from .preprocess import (GCN, ZCA, Pipeline, RandomFlip, RandomTranslate, Scale01, Standardize,
                         Transform)
from .registry import DATASETS, SOURCES, data_root

__all__ = ["load", "Dataset", "train_val_split", "SPLITS", "VALIDATION_SIZE", "DATASETS",
           "SOURCES", "data_root", "DataFileError", "MissingDataError", "Pipeline", "Transform",
           "Scale01", "Standardize", "GCN", "ZCA", "RandomTranslate", "RandomFlip",
           "BatchIterator"]
