"""Datasets over flowkit stores for action recognition: clip samplers, transforms, splits.

Typical use::

    from flowkit.data import (ClipDataset, RandomClipSampler, UniformClipSampler,
                              train_transform, test_transform, split_from_list)
    train = ClipDataset(store, split_from_list(store, "trainlist01.txt"), inputs=("rgb", "flow"),
                        sampler=RandomClipSampler(frames=8, step=2), transform=train_transform(112))
    test = ClipDataset(store, split_from_list(store, "testlist01.txt"), inputs=("rgb", "flow"),
                       sampler=UniformClipSampler(clips=10, frames=8, step=2),
                       transform=test_transform(112, crops=3))   # items carry V = 30 views
    for epoch in range(epochs):
        train.set_epoch(epoch)                                   # samples = f(seed, epoch, index)
        for batch in DataLoader(train, batch_size=32, shuffle=True, num_workers=8): ...
"""
from .datasets import FLOAT_FLOW_BOUND, ClipDataset, VideoInfo
from .samplers import (RandomClipSampler, SegmentClipsSampler, SegmentSampler, UniformClipSampler,
                       clip_at, clip_span, flow_indices)
from .splits import (label_map, labelled_keys, labels, listed_keys, num_classes, split_from_list,
                     stratified_split, unlabelled_note, video_group)
from .transforms import (IMAGENET_MEAN, IMAGENET_STD, TSN_SCALES, CenterCrop, Compose,
                         MultiScaleCrop, Normalize, RandomHorizontalFlip, TenCrop, ThreeCrop,
                         crop, hflip, normalize, resize, resized_crop, test_transform,
                         train_transform)

__all__ = [
    "ClipDataset", "VideoInfo", "FLOAT_FLOW_BOUND",
    "RandomClipSampler", "SegmentSampler", "SegmentClipsSampler", "UniformClipSampler", "clip_at",
    "clip_span",
    "flow_indices",
    "labels", "labelled_keys", "label_map", "unlabelled_note", "num_classes", "split_from_list",
    "listed_keys", "stratified_split", "video_group",
    "IMAGENET_MEAN", "IMAGENET_STD", "TSN_SCALES", "Compose", "MultiScaleCrop",
    "RandomHorizontalFlip", "Normalize", "CenterCrop", "ThreeCrop", "TenCrop",
    "crop", "hflip", "normalize", "resize", "resized_crop", "train_transform", "test_transform",
]
