"""A torch ``Dataset`` over reader records, loading images lazily (Pillow), and study grouping."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from relaxclip._checks import check_bool, check_type, describe
from relaxclip.data.labels import check_records

__all__ = ["ImageLabelDataset", "count_nan", "group_by_study", "load_image", "pil_to_tensor"]

_PIL_HINT = "reading images needs Pillow: pip install 'relaxclip[data]' (or pip install Pillow)"


def load_image(path: str | Path, mode: str = "RGB") -> Any:
    """``path`` opened with Pillow, loaded and converted to ``mode`` (``"RGB"``, ``"L"``, ...)."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError(_PIL_HINT) from exc
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image file {p} does not exist")
    with Image.open(p) as img:
        return img.convert(mode)


def pil_to_tensor(image: Any) -> torch.Tensor:
    """``float32 Tensor[C, H, W]`` in ``[0, 1]`` from an 8-bit PIL image (``L`` gives C = 1)."""
    arr = np.array(image)  # a writable copy
    if arr.dtype != np.uint8:
        raise TypeError(f"image: expected an 8-bit image, got array dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float().div_(255.0)


def group_by_study(
    records: Sequence[Mapping[str, Any]], *, key: str = "study_id"
) -> list[dict[str, Any]]:
    """Merge image-level records into study-level ones (order of first appearance).

    Each output has ``key``, ``image_paths``, ``images`` (the input records) and the first
    image's ``labels``, ``label_names``, ``report`` and ``patient_id``. Images of one study with
    different labels or reports raise ``ValueError`` naming the study.
    """
    groups: dict[Any, dict[str, Any]] = {}
    for i, rec in enumerate(check_records("records", records, (key, "image_path", "labels"))):
        sid = rec[key]
        labels = np.asarray(rec["labels"], dtype=np.float64)
        g = groups.get(sid)
        if g is None:
            g = groups[sid] = {
                key: sid,
                "patient_id": rec.get("patient_id"),
                "image_paths": [],
                "images": [],
                "labels": labels,
                "label_names": rec.get("label_names"),
                "report": rec.get("report"),
                **{k: rec[k] for k in ("report_sections", "split", "subject_id") if k in rec},
            }
        elif not np.array_equal(g["labels"], labels, equal_nan=True):
            raise ValueError(f"records[{i}]: study {sid!r} has images with different labels")
        elif g["report"] != rec.get("report"):
            raise ValueError(f"records[{i}]: study {sid!r} has images with different reports")
        g["image_paths"].append(rec["image_path"])
        g["images"].append(dict(rec))
    return list(groups.values())


class ImageLabelDataset(Dataset[Any]):
    """``Dataset`` of ``(image, labels)`` (``labels``: ``float32 Tensor[K]``, NaN kept).

    Args:
        records: reader output (dicts with ``image_key`` and ``labels``).
        transform: callable applied to the PIL image; default ``pil_to_tensor``.
        mode: PIL mode the image is converted to (``"RGB"``, ``"L"``).
        image_key: record key of the path, or of a list of paths (the item is a list of images).
        first_image: for a record holding a list of paths, load only its first image.
        as_dict: yield ``{"image", "labels"[, "report"]}`` dicts (``SentenceSampler`` input);
            ``"report"`` is there when every record has one (a mix of None and text raises).

    Raises:
        ValueError: a record without an image path (or with an empty list), labels that are
            not 1-D or of another length than ``records[0]``'s, or (``as_dict``) a mix of
            records with and without a report.
    """

    def __init__(
        self,
        records: Sequence[Mapping[str, Any]],
        transform: Callable[[Any], Any] | None = None,
        *,
        mode: str = "RGB",
        image_key: str = "image_path",
        first_image: bool = False,
        as_dict: bool = False,
    ) -> None:
        check_records("records", records, ("labels",), sequence=True)
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be a callable or None, got {describe(transform)}")
        self.mode = check_type("mode", mode, str, "a str")
        self.image_key = check_type("image_key", image_key, str, "a str")
        self.first_image = check_bool("first_image", first_image)
        self.as_dict = check_bool("as_dict", as_dict)
        n_labels: int | None = None
        for i, rec in enumerate(records):
            target = rec.get(image_key)
            if target is None or (isinstance(target, (list, tuple)) and not target):
                raise ValueError(f"records[{i}]: missing image path under key {image_key!r}")
            shape = np.shape(rec["labels"])
            if len(shape) != 1:
                raise ValueError(f"records[{i}]['labels'] must be 1-D, got shape {shape}")
            k = shape[0]
            n_labels = k if n_labels is None else n_labels
            if k != n_labels:
                raise ValueError(f"records[{i}]: {k} labels, expected {n_labels} like records[0]")
        has_report = [rec.get("report") is not None for rec in records]
        if self.as_dict and any(has_report) and not all(has_report):
            i, j = has_report.index(False), has_report.index(True)
            raise ValueError(
                f"records[{i}]: report is None while records[{j}] has one; as_dict=True needs "
                "a report in every record or in none (filter the records without one out)"
            )
        self.records = records
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def _load(self, path: Any) -> Any:
        image = load_image(path, self.mode)
        return self.transform(image) if self.transform is not None else pil_to_tensor(image)

    def __getitem__(self, index: int) -> Any:
        rec = self.records[index]
        target = rec[self.image_key]
        if isinstance(target, (list, tuple)):
            image: Any = (
                self._load(target[0]) if self.first_image else [self._load(p) for p in target]
            )
        else:
            image = self._load(target)
        labels = torch.as_tensor(np.asarray(rec["labels"], dtype=np.float32))
        if not self.as_dict:
            return image, labels
        item = {"image": image, "labels": labels}
        if rec.get("report") is not None:  # all records or none (checked in __init__)
            item["report"] = rec["report"]
        return item


def count_nan(records: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Number of NaN (unmentioned) labels per label name over ``records``."""
    if not records:
        return {}
    names = records[0].get("label_names") or [
        f"label_{i}" for i in range(len(records[0]["labels"]))
    ]
    counts = np.zeros(len(names), dtype=np.int64)
    for rec in records:  # numpy arrays of any float dtype, tensors and lists alike
        counts += np.isnan(np.asarray(torch.as_tensor(rec["labels"]).double().cpu()))
    return dict(zip(names, counts.tolist(), strict=True))
