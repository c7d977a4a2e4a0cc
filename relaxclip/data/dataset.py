"""A torch ``Dataset`` over reader records, loading images lazily, and study-level grouping.

Images are read with Pillow, imported on first use (install the extra that provides it:
``pip install 'relaxclip[data]'``, or ``pip install Pillow``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from relaxclip._checks import check_bool, describe
from relaxclip.data.labels import check_records

__all__ = ["ImageLabelDataset", "count_nan", "group_by_study", "load_image", "pil_to_tensor"]

_PIL_HINT = "reading images needs Pillow: pip install 'relaxclip[data]' (or pip install Pillow)"


def load_image(path: str | Path, mode: str = "RGB") -> Any:
    """Open ``path`` with Pillow and convert it to ``mode`` (``"RGB"``, ``"L"``, ...).

    Returns a ``PIL.Image.Image`` (fully loaded, file closed). ``ImportError`` with the
    install hint when Pillow is missing; ``FileNotFoundError`` naming the path.
    """
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


def _same_labels(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


def group_by_study(
    records: Sequence[Mapping[str, Any]], *, key: str = "study_id"
) -> list[dict[str, Any]]:
    """Merge image-level records into study-level ones (order of first appearance).

    Each output has ``key``, ``image_paths`` (the images' ``image_path`` in input order),
    ``images`` (the input records), ``labels``/``label_names``/``report``/``patient_id`` taken
    from the first image. Images of one study must have identical labels (NaN equal to NaN)
    and reports, else ``ValueError`` naming the study.
    """
    groups: dict[Any, dict[str, Any]] = {}
    for i, rec in enumerate(check_records("records", records, (key, "image_path", "labels"))):
        sid = rec[key]
        labels = np.asarray(rec["labels"], dtype=np.float64)
        if sid not in groups:
            groups[sid] = {
                key: sid,
                "patient_id": rec.get("patient_id"),
                "image_paths": [rec["image_path"]],
                "images": [dict(rec)],
                "labels": labels,
                "label_names": rec.get("label_names"),
                "report": rec.get("report"),
            }
            for extra in ("report_sections", "split", "subject_id"):
                if extra in rec:
                    groups[sid][extra] = rec[extra]
            continue
        g = groups[sid]
        if not _same_labels(g["labels"], labels):
            raise ValueError(f"records[{i}]: study {sid!r} has images with different labels")
        if g["report"] != rec.get("report"):
            raise ValueError(f"records[{i}]: study {sid!r} has images with different reports")
        g["image_paths"].append(rec["image_path"])
        g["images"].append(dict(rec))
    return list(groups.values())


class ImageLabelDataset(Dataset[Any]):
    """``Dataset`` yielding ``(image, labels)`` (or dicts) from reader records, loading images lazily.

    Args:
        records: reader output (dicts with ``image_key`` and ``labels``).
        transform: callable applied to the PIL image; default ``pil_to_tensor``
            (``float32 Tensor[C, H, W]`` in [0, 1]).
        mode: PIL mode the image is converted to (``"RGB"`` for CLIP encoders, ``"L"``).
        image_key: record key holding the path (``"image_path"``) or a list of paths
            (``"image_paths"`` of study records: the item is then a list of images).
        first_image: for a record holding a list of paths, load only its first image.
        as_dict: yield ``{"image", "labels"}`` dicts, plus ``"report"`` when the record has a
            report (the input :class:`~relaxclip.sampling.SentenceSampler` collates), instead of
            ``(image, labels)`` tuples.

    ``labels`` is ``float32 Tensor[K]`` with NaN for unmentioned labels, unchanged.
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
        for arg, value in (("mode", mode), ("image_key", image_key)):
            if not isinstance(value, str):
                raise TypeError(f"{arg} must be a str, got {describe(value)}")
        n_labels: int | None = None
        for i, rec in enumerate(records):
            if image_key not in rec or rec[image_key] is None:
                raise ValueError(f"records[{i}]: missing image path under key {image_key!r}")
            k = int(np.asarray(rec["labels"]).shape[0])
            if n_labels is None:
                n_labels = k
            elif k != n_labels:
                raise ValueError(f"records[{i}]: {k} labels, expected {n_labels} like records[0]")
        self.records = records
        self.transform = transform
        self.first_image = check_bool("first_image", first_image)
        self.as_dict = check_bool("as_dict", as_dict)
        self.mode = mode
        self.image_key = image_key

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
        if rec.get("report") is not None:
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
