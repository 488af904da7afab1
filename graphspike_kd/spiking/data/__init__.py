"""Event-camera data: jAER AEDAT 2.0 reader/writer, event-to-frame integration, CIFAR10-DVS, splits,
augmentations; scikit-learn's digits for quick spiking experiments (:mod:`.digits`)."""

from graphspike_kd.spiking.data.aedat import (
    EVENT_DTYPE,
    AedatHeader,
    read_aedat,
    read_aedat_header,
    write_aedat,
)
from graphspike_kd.spiking.data.cifar10dvs import (
    CIFAR10DVS,
    CLASS_NAMES,
    FrameSettings,
    read_aedat4_events,
    scan_release,
    spikingjelly_orientation,
)
from graphspike_kd.spiking.data.digits import (
    DIGITS_MODELS,
    digits_model,
    load_digits_split,
    load_digits_tensors,
)
from graphspike_kd.spiking.data.frames import events_to_frames, orient_events
from graphspike_kd.spiking.data.samples import sample_recording
from graphspike_kd.spiking.data.splits import SPLIT_DESCRIPTIONS, SPLITS, split_indices
from graphspike_kd.spiking.data.transforms import (
    Compose,
    RandomHorizontalFlip,
    RandomRoll,
    Resize,
    dvs_test_transform,
    dvs_train_transform,
)

__all__ = [
    "CIFAR10DVS",
    "CLASS_NAMES",
    "DIGITS_MODELS",
    "EVENT_DTYPE",
    "SPLITS",
    "SPLIT_DESCRIPTIONS",
    "AedatHeader",
    "Compose",
    "FrameSettings",
    "RandomHorizontalFlip",
    "RandomRoll",
    "Resize",
    "digits_model",
    "dvs_test_transform",
    "dvs_train_transform",
    "events_to_frames",
    "load_digits_split",
    "load_digits_tensors",
    "orient_events",
    "read_aedat",
    "read_aedat4_events",
    "read_aedat_header",
    "sample_recording",
    "scan_release",
    "spikingjelly_orientation",
    "split_indices",
    "write_aedat",
]
